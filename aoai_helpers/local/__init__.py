"""Local mode: the AOAI simulator, the APIM-emulating gateway and the stack that runs them.

Local mode replaces exactly three boxes of the Azure path (ARCHITECTURE.md §1): AOAI
(:class:`Simulator`), APIM (:class:`Gateway`) and Event Hubs (the on-disk event log of
:mod:`aoai_helpers.eventhub`). :class:`LocalStack` runs them with the consumer on loopback;
``python -m aoai_helpers local up|down|status`` runs it in the background. Needs the ``local``
extra (``openai``, ``httpx``, ``uvicorn``).
"""

from __future__ import annotations

from .gateway import Gateway, build_event
from .simulator import SimCall, Simulator
from .stack import LocalStack, StackInfo
from .traffic import CallResult, drive_traffic

__all__ = [
    "CallResult",
    "Gateway",
    "LocalStack",
    "SimCall",
    "Simulator",
    "StackInfo",
    "build_event",
    "drive_traffic",
]
