"""Writing files that hold secrets: owner-only (0600), atomic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

__all__ = ["write_private"]


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON readable only by its owner (0600), atomically (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
