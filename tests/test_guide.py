"""The notebook helpers outside a notebook: parameters, display, agreement rules, the runner."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from aoai_helpers.exceptions import AoaiHelpersError, ConfigError, InputError
from aoai_helpers.notebook_steps import Shown, Target, plan_apim, plan_clean_up
from aoai_helpers.notebook_steps.runner import run_notebook
from aoai_helpers.notebook_steps.smoke import _agreement

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "gateway.yaml"


def test_target_checks_its_parameters(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode must be"):
        Target.create("cloud", SPEC)
    with pytest.raises(ConfigError, match="credential must be"):
        Target.create("azure", SPEC, credential="password")
    with pytest.raises(InputError, match="not found"):
        Target.create("local", tmp_path / "missing.yaml")
    with pytest.raises(ConfigError):
        Target.create("local", SPEC, cloud="AzureMars")
    target = Target.create("azure", SPEC, "postgresql://u:pw-secret@db/x", cloud="AzureChinaCloud")
    assert target.spec.cloud == "AzureChinaCloud"
    assert target.gateway_url() == "https://apim-aoai-gateway.azure-api.cn"
    shown = repr(target)
    assert "pw-secret" not in shown and "***" in shown
    assert "pw-secret" not in target._repr_html_()


def test_target_without_a_running_stack_says_what_to_run(tmp_path: Path) -> None:
    target = Target.create("local", SPEC, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="notebook 00"):
        target.subscription_keys()
    azure = Target.create("azure", SPEC, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="notebook 01"):
        azure.subscription_keys()


def test_shown_escapes_html_and_renders_text() -> None:
    import pandas as pd

    shown = Shown("<b>title</b>", "warn", ["a < b"], [("cap", pd.DataFrame([{"x": "<script>"}]))])
    html = shown._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;title" in html
    text = shown.text()
    assert text.startswith("⚠ <b>title</b>") and "a < b" in text and "<script>" in text
    assert shown.ok and not Shown("x", "fail").ok


def _row(source: str, p: int, c: int) -> SimpleNamespace:
    return SimpleNamespace(
        UsageSource=source, PromptTokens=p, CompletionTokens=c, TotalTokens=p + c
    )


def test_agreement_between_a_row_and_the_api_usage() -> None:
    api = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert _agreement(_row("reported", 10, 5), api) == "yes"
    assert _agreement(_row("reported", 10, 4), api) == "NO"
    assert _agreement(_row("prompt_only", 10, 0), api) == "not yet reconciled"
    assert _agreement(_row("reconciled", 10, 5), api) == "yes"  # what the client was told
    assert _agreement(_row("reconciled", 10, 6), api) == "NO"
    assert _agreement(_row("reconciled", 10, 6), None) == "from APIM's log"
    assert _agreement(_row("estimated", 10, 0), None) == "not yet reconciled"
    assert _agreement(_row("reported", 10, 0), None) == "client got none"
    embedding = {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}
    assert _agreement(_row("prompt_only", 7, 0), embedding) == "yes"
    assert _agreement(_row("prompt_only", 6, 0), embedding) == "NO"
    assert _agreement(None, api) == "-"


def test_local_plans_are_offline_dry_runs(tmp_path: Path) -> None:
    target = Target.create("local", SPEC, state_dir=tmp_path)
    plan = plan_apim(target)
    assert plan.data.offline and plan.data.counts()["create"] == len(plan.data.steps) > 0
    assert any("in-memory ARM" in line for line in plan.lines)
    clean = plan_clean_up(target)
    assert "not running" in clean.title
    assert clean.data.counts()["delete"] > 0


def _notebook(tmp_path: Path, name: str, *cells: str) -> Path:
    book = new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        }
    )
    book.cells = [new_code_cell(cells[0], metadata={"tags": ["parameters"]})]
    book.cells += [new_code_cell(c) for c in cells[1:]]
    nbformat.write(book, tmp_path / f"{name}.ipynb")
    return tmp_path


@pytest.mark.notebooks
def test_runner_names_the_failing_cell_and_keeps_the_executed_copy(tmp_path: Path) -> None:
    source = _notebook(
        tmp_path,
        "broken",
        'mode = "local"',
        "from aoai_helpers import notebook_steps as steps\n\nsteps.brief_errors()",
        "steps.Target.create(mode)",
        "steps.Target.create('sideways')",
    )
    out = tmp_path / "out"
    with pytest.raises(AoaiHelpersError) as err:
        run_notebook("broken", out, {"mode": "local"}, source_dir=source)
    message = str(err.value)
    assert "broken" in message and "ConfigError" in message and "sideways" in message
    executed = nbformat.read(out / "broken.ipynb", as_version=4)
    (error,) = [o for o in executed.cells[-1].outputs if o.output_type == "error"]
    assert error.ename == "ConfigError"
    assert error.traceback == [f"✘ {error.evalue}"]  # one line, not a traceback

    # The parameters papermill injected are in the executed copy, not in the source.
    def injected(book: nbformat.NotebookNode) -> int:
        return sum("injected-parameters" in c.metadata.get("tags", []) for c in book.cells)

    assert injected(executed) == 1
    assert injected(nbformat.read(source / "broken.ipynb", as_version=4)) == 0


@pytest.mark.notebooks
def test_runner_passes_on_what_the_kernel_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kernel's own stderr reaches the caller whole: a real error must be seen."""
    source = _notebook(
        tmp_path,
        "noisy",
        'mode = "local"',
        "import os\nos.write(2, b'kernel: something really went wrong\\n')",
    )
    executed = run_notebook("noisy", tmp_path / "out", {"mode": "local"}, source_dir=source)
    assert executed.exists()
    assert capsys.readouterr().err == "kernel: something really went wrong\n"


@pytest.mark.notebooks
def test_a_finished_kernel_is_not_interrupted_on_its_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No SIGINT before the shutdown request (jupyter_client's default sends one): a kernel
    interrupted in its teardown logged "KeyboardInterrupt caught in kernel" or aborted in
    libzmq. This kernel notes any SIGINT it gets in a file."""
    marker = tmp_path / "sigint"
    source = _notebook(
        tmp_path,
        "no_sigint",
        'mode = "local"',
        "import signal\n"
        f"signal.signal(signal.SIGINT, lambda *_: open({str(marker)!r}, 'a').write('SIGINT'))",
    )
    run_notebook("no_sigint", tmp_path / "out", {"mode": "local"}, source_dir=source)
    assert capsys.readouterr().err == ""
    assert not marker.exists()


def test_what_is_printed_after_the_last_cell_is_filed_beside_the_executed_copy(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """fd 2 after the last cell is the kernel's shutdown (ipykernel 7 under load: flush time-outs,
    tornado tracebacks, libzmq assertions): kept in ``<executed>.exit.log``, not passed on; what
    was printed while cells ran is passed on; a quiet exit leaves no file."""
    from aoai_helpers.notebook_steps._execute import _StderrSplit

    split = _StderrSplit()
    os.write(2, b"kernel: during a cell\n")
    split.cell_executed(cell=None)
    os.write(2, b"Assertion failed: pfd.revents & POLLIN (src/signaler.cpp:238)\n")
    log = tmp_path / "book.ipynb.exit.log"
    split.finish(log)
    assert capfd.readouterr().err == "kernel: during a cell\n"
    assert log.read_text() == "Assertion failed: pfd.revents & POLLIN (src/signaler.cpp:238)\n"

    split = _StderrSplit()
    split.cell_executed(cell=None)
    split.finish(log)  # a quiet exit: no file (an old one is not left behind)
    assert not log.exists()
    assert capfd.readouterr().err == ""


def test_runner_refuses_a_missing_notebook(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no notebook"):
        run_notebook("nope", tmp_path, {}, source_dir=tmp_path)


@pytest.mark.notebooks
def test_notebooks_report_renders_04_on_an_existing_database(tmp_path: Path) -> None:
    """``make report``: notebook 04 on a database of the user's, rendered offline."""
    from cli_run import run_cli

    from aoai_helpers.analysis.html_report import check_offline
    from aoai_helpers.spec import load_spec
    from aoai_helpers.synthetic.history import drive_history, plan_history

    spec = load_spec(SPEC)
    db = f"sqlite:///{tmp_path / 'usage.db'}"
    plan = plan_history(spec, "2026-10", now=datetime(2026, 11, 1, tzinfo=UTC), calls_per_day=0.5)
    drive_history(spec, db, plan)
    done = run_cli(
        "notebooks",
        "report",
        "--db",
        db,
        "--month",
        "2026-10",
        "--out",
        str(tmp_path / "out"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    html = tmp_path / "out" / "04_cost_analysis.html"
    assert done.stdout.strip() == f"report: {html}"
    assert (tmp_path / "out" / "report.html").is_file()  # finance's, written by the notebook
    check_offline(html)
    text = html.read_text("utf-8")
    assert "chargeback per business unit, 2026-10" in text and "guide.CostReport" not in text

    missing = run_cli(
        "notebooks", "report", "--db", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path)
    )
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("error: no database file")
    bad = run_cli("notebooks", "report", "--month", "2026-13", "--out", str(tmp_path))
    assert (bad.returncode, bad.stderr.startswith("error: month must look like")) == (1, True)


def test_azure_mode_provisions_and_cleans_up_through_the_real_sdk(tmp_path: Path) -> None:
    """Notebooks 01 and 99 in Azure mode, the SDK sending to the in-memory ARM: plan, apply,
    keys written 0600, a second plan with nothing to do, the clean-up, then a plan that starts
    over — and the requests on the documented REST paths."""
    import stat

    from aoai_helpers.azure.dryrun import DryRunTransport
    from aoai_helpers.local.stack import LocalStack
    from aoai_helpers.notebook_steps import apply_apim, apply_clean_up, plan_function, start
    from aoai_helpers.spec import load_spec

    transport = DryRunTransport()
    spec = load_spec(SPEC)
    with LocalStack(
        spec,
        db_url=f"sqlite:///{tmp_path / 'u.db'}",
        state_dir=tmp_path / "local",
        write_state=False,
    ) as stack:
        target = Target.create(
            "azure",
            SPEC,
            "postgresql://billing:pw-in-url@db.example/usage",
            state_dir=tmp_path / "state",
            gateway_url=stack.info.gateway_url,  # the probe of a wrong key needs a gateway
            arm_transport=transport,
        )
        signed_in = start(target)
        assert signed_in.title == "signed in to AzureCloud"
        first = plan_apim(target)
        assert first.data.counts() == {"create": len(first.data.steps), "update": 0, "noop": 0}
        applied = apply_apim(target)
        assert applied.status == "ok", applied.text()
        mode = stat.S_IMODE(target.keys_file.stat().st_mode)
        assert mode == 0o600
        keys = target.subscription_keys()
        assert set(keys) == {s.id for s in spec.subscriptions}
        # The in-memory ARM invents no secrets: its keys are placeholders, shown as such.
        assert set(keys.values()) == {"<dry-run: generated by Azure at apply>"}
        again = plan_apim(target)
        assert again.data.counts()["noop"] == len(again.data.steps)
        function = plan_function(target)  # the function app's settings, read through azure-mgmt-web
        assert function.title == "deployment plan"
        assert "pw-in-url" not in function.text() and "AOAI_DB_URL" in function.text()

        transport.requests.clear()
        clean = plan_clean_up(target)
        assert clean.data.counts()["delete"] > 0
        done = apply_clean_up(target)
        assert done.status == "ok"
        deletes = [r for r in transport.requests if r.method == "DELETE"]
        prefix = (
            f"/subscriptions/{spec.subscription_id}/resourceGroups/{spec.apim.resource_group}"
            f"/providers/Microsoft.ApiManagement/service/{spec.apim.service_name}/"
        )
        assert deletes and all(r.path.startswith(prefix) for r in deletes)
        kinds = {r.path[len(prefix) :].split("/")[0] for r in deletes}
        assert {"subscriptions", "products", "apis", "namedValues", "loggers"} <= kinds
        assert all("api-version=" in r.url for r in deletes)
        after = plan_apim(target)
        assert after.data.counts()["create"] == len(after.data.steps)
