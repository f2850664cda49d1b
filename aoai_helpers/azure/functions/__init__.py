"""The Azure Function that ingests usage events from Event Hubs: its body, package and settings.

``template/function_app.py``   the trigger (Python v2 model): Event Hubs batches, retry forever
``template/host.json``         batch sizes, checkpointing, log levels
:mod:`.handler`                the body: one batch → one ``ingest_batch`` transaction, one log line
:mod:`.build`                  the reproducible deployment zip (template + package + requirements)
:mod:`.settings`               the app setting names, and their values for a spec

Nothing here imports ``azure.functions``: only the template does, on the Functions host.
"""

from __future__ import annotations

from aoai_helpers.azure.functions.build import BuildResult, build_zip, indexed_functions, unpack
from aoai_helpers.azure.functions.handler import handle, reset

__all__ = [
    "BuildResult",
    "build_zip",
    "handle",
    "indexed_functions",
    "reset",
    "unpack",
]
