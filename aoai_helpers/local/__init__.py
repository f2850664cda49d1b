"""Local mode: the AOAI simulator, the APIM-emulating gateway and the stack that runs them.

Local mode replaces exactly three boxes of the Azure path (docs/architecture.md): AOAI
(:class:`Simulator`; its replies in ``replies`` / ``reply_types``), APIM (:class:`Gateway`, with
``events``, ``relay``, ``bodies``, ``keys`` and ``limits``) and Event Hubs (the on-disk event log
of :mod:`aoai_helpers.eventlog.local`). ``asgi`` is the plumbing both servers share.
:class:`LocalStack` runs them with the consumer on loopback (``servers``, ``writers``);
``python -m aoai_helpers local up|down|status`` runs it in the background (``control``). Needs
the ``local`` extra (``openai``, ``httpx``, ``uvicorn``). Imports every wing below it (``core`` …
``azure``: the policy's settings) and the top level.
"""

from __future__ import annotations

from aoai_helpers.local.gateway import Gateway, build_event
from aoai_helpers.local.simulator import SimCall, Simulator
from aoai_helpers.local.stack import LocalStack, StackInfo

__all__ = [
    "Gateway",
    "LocalStack",
    "SimCall",
    "Simulator",
    "StackInfo",
    "build_event",
]
