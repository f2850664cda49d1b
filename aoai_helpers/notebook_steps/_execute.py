"""Child process of :func:`aoai_helpers.notebook_steps.runner.run_notebook`: one papermill run.

Run as a script (``python -I _execute.py``), it reads its arguments as one JSON object on
stdin, executes the notebook with papermill and prints one JSON line on stdout: ``{"ok": true}``
or ``{"ok": false, "cell": N, "ename": …, "evalue": …}`` for a failing cell. Keeping papermill,
its kernel manager and their sockets in a process of their own means the caller never holds
objects of theirs that are finalised late.

What the kernel prints on its stderr while the cells run is passed on (this process's stderr,
which the parent reads whole once this process has exited). What it prints after the last cell
has run — while it shuts down — is not about the notebook: it goes to ``<executed>.exit.log``
beside the executed copy, kept only when not empty. ipykernel 7's shutdown on a loaded machine
(CI, ``make test-stress``) was seen to print "IOStream.flush timed out", a tornado traceback
("Socket operation on non-socket" in ``dispatch_control``) and libzmq's "Assertion failed:
pfd.revents & POLLIN (src/signaler.cpp:238)".

A kernel whose cells have all finished is also shut down without the interrupt jupyter_client
sends first (:func:`_polite_kernel_manager`): interrupted while it exits, ipykernel logs
"KeyboardInterrupt caught in kernel". jupyter_client's waits are kept: a kernel still alive
2.5 s after the shutdown request is terminated (SIGTERM), and killed at 5 s.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def _polite_kernel_manager() -> type[Any]:
    """jupyter_client's AsyncKernelManager, less the interrupt before a shutdown request.

    ``shutdown_kernel`` interrupts the kernel (``_async_interrupt_kernel``) before it sends the
    shutdown request, to stop code that is still running; here every cell has finished when the
    kernel is shut down, so that interrupt only disturbs its exit. Interrupts at other times
    (none are asked for: cells time out without one) are unchanged.
    """
    from jupyter_client.manager import AsyncKernelManager

    class PoliteKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return PoliteKernelManager


class _StderrSplit:
    """fd 2 (inherited by the kernel) sent to a file; where it stood when the last cell ended."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed in finish, after the run)
        self.saved = os.dup(2)
        self.after_cells = 0
        sys.stderr.flush()
        os.dup2(self.file.fileno(), 2)

    def cell_executed(self, **_: Any) -> None:
        """nbclient's ``on_cell_executed`` hook: everything so far was printed while cells ran."""
        self.after_cells = os.lseek(self.file.fileno(), 0, os.SEEK_END)

    def finish(self, exit_log: Path) -> None:
        """Pass on what the cells' time printed; file what the kernel's exit printed."""
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        text = self.file.read()
        self.file.close()
        during, after = text[: self.after_cells], text[self.after_cells :]
        if during:
            os.write(2, during)
        if after.strip():
            exit_log.write_bytes(after)
        else:
            exit_log.unlink(missing_ok=True)


def main() -> int:
    """Execute the notebook described on stdin; report on stdout; 0 when every cell passed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    args = json.load(sys.stdin)
    split = _StderrSplit()
    report: dict[str, Any] = {"ok": True}
    try:
        papermill.execute_notebook(
            args["source"],
            args["executed"],
            parameters=args["parameters"],
            kernel_name="python3",
            cwd=args["cwd"],
            progress_bar=False,
            request_save_on_cell_execute=False,
            execution_timeout=args["timeout"],
            # The kernel's start-up notice about TCP transport on loopback is noise here.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
            kernel_manager_class=_polite_kernel_manager(),
            on_cell_executed=split.cell_executed,
        )
    except PapermillExecutionError as exc:
        report = {"ok": False, "cell": exc.exec_count, "ename": exc.ename, "evalue": exc.evalue}
    finally:
        split.finish(Path(f"{args['executed']}.exit.log"))
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
