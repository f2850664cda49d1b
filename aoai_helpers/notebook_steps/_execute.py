"""Child process of :func:`aoai_helpers.notebook_steps.runner.run_notebook`: one papermill run.

Run as a script (``python -I _execute.py``), it reads its arguments as one JSON object on
stdin, executes the notebook with papermill and prints one JSON line on stdout: ``{"ok": true}``
or ``{"ok": false, "cell": N, "ename": …, "evalue": …}`` for a failing cell. The kernel it
starts inherits this process's stderr, which the parent reads whole once this process has
exited, i.e. once the kernel is shut down. Keeping papermill, its kernel manager and their
sockets in a process of their own means the caller never holds objects of theirs that are
finalised late, and its stderr only ever shows what the kernel printed.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Execute the notebook described on stdin; report on stdout; 0 when every cell passed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    args = json.load(sys.stdin)
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
        )
    except PapermillExecutionError as exc:
        report = {"ok": False, "cell": exc.exec_count, "ename": exc.ename, "evalue": exc.evalue}
        print(json.dumps(report), flush=True)
        return 1
    print(json.dumps({"ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
