"""Child process of :func:`aoai_helpers.notebook_steps.runner.run_notebook`: one papermill run.

Run as a script (``python -I _execute.py``), it reads its arguments as one JSON object on
stdin, executes the notebook with papermill and prints one JSON line on stdout: ``{"ok": true}``
or ``{"ok": false, "cell": N, "ename": …, "evalue": …}`` for a failing cell. The kernel it
starts inherits this process's stderr, which the parent reads whole once this process has
exited, i.e. once the kernel is shut down. Keeping papermill, its kernel manager and their
sockets in a process of their own means the caller never holds objects of theirs that are
finalised late, and its stderr only ever shows what the kernel printed.

A kernel whose cells have all finished is shut down without the interrupt jupyter_client
sends first (:func:`_polite_kernel_manager`): interrupted while it exits, ipykernel logs
"KeyboardInterrupt caught in kernel", and on a loaded machine (CI, ``make test-stress``) a
kernel interrupted inside its ZeroMQ teardown aborted with libzmq's "Assertion failed:
pfd.revents & POLLIN (src/signaler.cpp:238)". jupyter_client's waits are kept: a kernel still
alive 2.5 s after the shutdown request is terminated (SIGTERM, which ipykernel does not catch:
it ends silently), and killed at 5 s. Its cells' results are in the executed copy by then; a
longer wait only lets ipykernel 7's exit hang on its own IOPub thread and print "IOStream.flush
timed out" after 10 s, which was seen too.
"""

from __future__ import annotations

import json
import sys
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
            kernel_manager_class=_polite_kernel_manager(),
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
