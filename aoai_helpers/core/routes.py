"""Which requests the gateway serves, and as what: one path-safe classifier (pure).

The gateway bills what it forwards, so it must forward exactly what it classified. A path is
classified **as it arrives** and only canonical paths are accepted — no normalisation that a
backend could undo or redo differently:

- every segment is made of unreserved characters only (``A-Z a-z 0-9 - _ ~ .``) and does not
  start with ``.``: no ``.`` / ``..`` segments (``/chat/completions/.``,
  ``/deployments/a/../b/…``), no percent-encoding at all (``%2e%2e``, ``%2F``, ``%23``), no
  empty segment (``//``), no trailing ``/``, no backslash or control character;
- the whole path is one of the operations the gateway can meter (:data:`METERED`): chat
  completions, completions and embeddings on ``/openai/deployments/{deployment}/…`` and on the
  v1 API (``/openai/v1/…``), and the Responses API (``/openai/responses``,
  ``/openai/v1/responses``); the method is ``POST``;
- operations the gateway cannot meter in tokens — images, audio, files, batches, fine-tuning,
  assistants, threads, vector stores, realtime (:data:`UNMETERED`) — are refused unless the spec
  allows them (``capture.allow_unmetered``), and then billed as *unpriced calls*, counted per BU
  and never costed as 0;
- anything else is not an operation of the API (404), and is never forwarded.

:func:`classify` returns a :class:`Route` (what to forward and bill) or a :class:`Refusal`
(the status and APIM-shaped message to answer with). The APIM policy applies the same rules
(``policies/api-policy.xml``, "inbound"); the tests hold the two to the same table of cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DEPLOYMENT",
    "METERED",
    "UNMETERED",
    "Refusal",
    "Route",
    "canonical",
    "classify",
]

Operation = Literal["chat", "completions", "embeddings", "responses"]

#: A deployment name in a path (AOAI: letters, digits, ``-``, ``_``, ``.``; not starting with ``.``).
DEPLOYMENT: Final = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,63}"
_SEGMENT: Final = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
_CANONICAL: Final = re.compile(rf"^(?:/{_SEGMENT})+$")

#: The operations the gateway meters: path pattern → operation.
METERED: Final[tuple[tuple[re.Pattern[str], Operation], ...]] = (
    (re.compile(rf"^/openai/deployments/(?P<d>{DEPLOYMENT})/chat/completions$"), "chat"),
    (re.compile(rf"^/openai/deployments/(?P<d>{DEPLOYMENT})/completions$"), "completions"),
    (re.compile(rf"^/openai/deployments/(?P<d>{DEPLOYMENT})/embeddings$"), "embeddings"),
    (re.compile(r"^/openai/responses$"), "responses"),
    (re.compile(r"^/openai/v1/chat/completions$"), "chat"),
    (re.compile(r"^/openai/v1/completions$"), "completions"),
    (re.compile(r"^/openai/v1/embeddings$"), "embeddings"),
    (re.compile(r"^/openai/v1/responses$"), "responses"),
)
#: Operations of the API that are not metered in tokens: name → path pattern.
UNMETERED: Final[dict[str, re.Pattern[str]]] = {
    "images": re.compile(rf"^/openai/(?:deployments/{DEPLOYMENT}/|v1/)images(?:/.*)?$"),
    "audio": re.compile(rf"^/openai/(?:deployments/{DEPLOYMENT}/|v1/)audio(?:/.*)?$"),
    "realtime": re.compile(rf"^/openai/(?:deployments/{DEPLOYMENT}/|v1/)?realtime(?:/.*)?$"),
    "files": re.compile(r"^/openai/(?:v1/)?files(?:/.*)?$"),
    "batches": re.compile(r"^/openai/(?:v1/)?batches(?:/.*)?$"),
    "fine_tuning": re.compile(r"^/openai/(?:v1/)?fine_tuning(?:/.*)?$"),
    "assistants": re.compile(r"^/openai/(?:v1/)?(?:assistants|threads)(?:/.*)?$"),
    "vector_stores": re.compile(r"^/openai/(?:v1/)?vector_stores(?:/.*)?$"),
}


@dataclass(frozen=True, slots=True)
class Route:
    """A request the gateway serves: the operation billed and, on classic paths, the
    deployment from the path (v1 and Responses calls name it in the body's ``model``)."""

    operation: Operation | Literal["unmetered"]
    v1: bool
    deployment: str | None
    unmetered: str | None = None  # the unmetered operation's name (allowed by the spec)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the gateway refuses: the status and the reason (APIM-shaped message)."""

    status: int
    message: str


def canonical(path: str) -> bool:
    """Whether ``path`` is canonical (see the module docstring): nothing to normalise."""
    return bool(_CANONICAL.fullmatch(path))


def classify(
    method: str, path: str, allow_unmetered: frozenset[str] = frozenset()
) -> Route | Refusal:
    """What ``method`` on ``path`` (the URL path as received, without the query) is."""
    if not canonical(path):
        return Refusal(
            400,
            "Bad request: the URL path is not canonical (percent-encoding, '.' or '..' "
            "segments, empty segments or a trailing '/' are refused).",
        )
    if not path.startswith("/openai/"):
        return Refusal(404, "Resource not found")
    for pattern, operation in METERED:
        m = pattern.fullmatch(path)
        if m is not None:
            if method != "POST":
                return Refusal(404, "Resource not found")
            return Route(operation, path.startswith("/openai/v1/"), m.groupdict().get("d"))
    for name, pattern in UNMETERED.items():
        if pattern.fullmatch(path):
            if name not in allow_unmetered:
                return Refusal(
                    403,
                    f"The gateway does not serve '{name}' operations: their usage is not metered "
                    "in tokens and could not be billed (allow them in the spec: "
                    "capture.allow_unmetered).",
                )
            deployment = re.match(rf"^/openai/deployments/({DEPLOYMENT})/", path)
            return Route(
                "unmetered",
                path.startswith("/openai/v1/"),
                deployment.group(1) if deployment else None,
                unmetered=name,
            )
    return Refusal(404, "Resource not found")
