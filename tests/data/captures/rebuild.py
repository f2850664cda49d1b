"""Rebuild ``pairs.jsonl`` and ``SUMMARY.md`` from the stored raw captures.

The files under ``raw/<owner>__<repo>/`` are verbatim copies of recorded HTTP
cassettes (VCR.py / pytest-recording YAML, including pydantic-ai's
``parsed_body`` variant) taken from other public projects; ``SOURCES.md`` says
where each one came from.  The captures are never edited: this script only
reads them, decodes what the cassette format encodes (``!!binary`` gzip
bodies, YAML-parsed bodies) and writes one JSON object per OpenAI / Azure
OpenAI request/response pair whose HTTP 200 response reports ``usage``.

Output is deterministic: the same raw files give byte-identical
``pairs.jsonl`` and ``SUMMARY.md``.

Run from the repository root::

    .venv/bin/python tests/data/captures/rebuild.py
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw"
SOURCES_MD = HERE / "SOURCES.md"
PAIRS = HERE / "pairs.jsonl"
SUMMARY = HERE / "SUMMARY.md"

Json = dict[str, Any]


def load_sources() -> dict[str, Json]:
    """Map stored file (relative to raw/) -> {repo, path, commit} from SOURCES.md and the
    tables under ``sources/`` (one per collecting session)."""
    out: dict[str, Json] = {}
    tables = [SOURCES_MD, *sorted((HERE / "sources").glob("*.md"))]
    lines = [
        line for t in tables if t.exists() for line in t.read_text(encoding="utf-8").splitlines()
    ]
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        stored, repo, path, commit = (c.strip("`") for c in cells[:4])
        out[stored] = {"repo": repo, "path": path, "commit": commit or None}
    return out


def body_text(raw: Any) -> str | None:
    """Decode a recorded body (str, or bytes possibly gzip/deflate) to text."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (bytes, bytearray)):
        data = bytes(raw)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif data[:1] == b"\x78":
            with contextlib.suppress(zlib.error):  # not deflate after all: keep the bytes
                data = zlib.decompress(data)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def typed_content(body: Any) -> Any:
    """pydantic-ai's newer format stores ``body: {type: json, content: ...}``."""
    if isinstance(body, dict) and body.get("type") == "json" and "content" in body:
        return body["content"]
    return None


def typed_text(body: Any) -> str | None:
    """pydantic-ai's ``body: {type: text, content: "..."}`` (recorded streams)."""
    if (
        isinstance(body, dict)
        and body.get("type") == "text"
        and isinstance(body.get("content"), str)
    ):
        return body["content"]
    return None


def request_body(req: Json) -> Json | None:
    if isinstance(req.get("parsed_body"), dict):
        return req["parsed_body"]
    if isinstance(typed_content(req.get("body")), dict):
        return typed_content(req.get("body"))
    text = body_text(req.get("body", req.get("content")))
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def response_text(resp: Json) -> tuple[str | None, bool]:
    """Return (body text, reserialized?) for a recorded response."""
    if "parsed_body" in resp:
        return json.dumps(resp["parsed_body"], ensure_ascii=False), True
    body = resp.get("body")
    if typed_content(body) is not None:
        return json.dumps(typed_content(body), ensure_ascii=False), True
    if typed_text(body) is not None:
        return typed_text(body), False
    if body is None and "content" in resp:  # vcrpy's httpx form: content / status_code
        return body_text(resp.get("content")), False
    raw = body.get("string") if isinstance(body, dict) else body
    return body_text(raw), False


def operation(path: str) -> str | None:
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/responses"):
        return "responses"
    if path.endswith("/completions"):
        return "completions"
    if path.endswith("/embeddings"):
        return "embeddings"
    return None


def clean_url(uri: str) -> str:
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k == "api-version"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def sse_events(text: str) -> list[Json]:
    events: list[Json] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            continue
        try:
            value = json.loads(payload)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


def usage_and_model(op: str, text: str, stream: bool) -> tuple[Json | None, str | None]:
    """Find the usage object and model the API reported in a response body."""
    if stream or text.lstrip().startswith(("data:", "event:")):
        usage: Json | None = None
        model: str | None = None
        for ev in sse_events(text):
            obj = ev.get("response") if isinstance(ev.get("response"), dict) else ev
            if obj.get("model") and not model:
                model = obj["model"]
            if isinstance(obj.get("usage"), dict):
                usage = obj["usage"]
                model = obj.get("model") or model
        return usage, model
    try:
        doc = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
    return usage, doc.get("model")


def normalise(usage: Json) -> Json:
    def detail(key: str, field: str) -> int | None:
        value = usage.get(key)
        return value.get(field) if isinstance(value, dict) else None

    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    cached = detail("prompt_tokens_details", "cached_tokens")
    if cached is None:
        cached = detail("input_tokens_details", "cached_tokens")
    reasoning = detail("completion_tokens_details", "reasoning_tokens")
    if reasoning is None:
        reasoning = detail("output_tokens_details", "reasoning_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": usage.get("total_tokens"),
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
    }


def shape(op: str, req: Json, stream: bool) -> str:
    """A coarse label of the request shape, used only for SUMMARY.md."""
    tags: list[str] = []
    if op == "chat":
        msgs = req.get("messages") or []
        if (
            req.get("tools")
            or req.get("functions")
            or any(
                isinstance(m, dict)
                and (m.get("role") in ("tool", "function") or m.get("tool_calls"))
                for m in msgs
            )
        ):
            tags.append("tools")
        rf = req.get("response_format")
        if isinstance(rf, dict) and rf.get("type") in ("json_schema", "json_object"):
            tags.append(rf["type"])
        if any(isinstance(m, dict) and isinstance(m.get("content"), list) for m in msgs):
            tags.append("parts")
    elif op == "responses":
        items = req.get("input") if isinstance(req.get("input"), list) else []
        if req.get("tools") or any(
            isinstance(i, dict) and str(i.get("type", "")).startswith("function_call")
            for i in items
        ):
            tags.append("tools")
        if any(isinstance(i, dict) and i.get("type") == "reasoning" for i in items):
            tags.append("reasoning-items")
        fmt = (req.get("text") or {}).get("format") if isinstance(req.get("text"), dict) else None
        if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
            tags.append(fmt["type"])
    if stream:
        tags.append("stream")
    return op + ("/" + "+".join(tags) if tags else "/plain")


def pairs_from(stored: str, doc: Any, source: Json) -> list[Json]:
    out: list[Json] = []
    interactions = doc.get("interactions") if isinstance(doc, dict) else None
    for idx, inter in enumerate(interactions or []):
        req, resp = inter.get("request") or {}, inter.get("response") or {}
        uri = req.get("uri") or ""
        op = operation(urlsplit(uri).path)
        status = resp.get("status", resp.get("status_code"))
        status = status.get("code") if isinstance(status, dict) else status
        if op is None or status != 200 or (req.get("method") or "POST").upper() != "POST":
            continue
        body = request_body(req)
        text, reserialized = response_text(resp)
        if body is None or text is None:
            continue
        stream = body.get("stream") is True
        usage, model = usage_and_model(op, text, stream)
        if not usage:
            continue
        host = urlsplit(uri).netloc
        out.append(
            {
                "id": f"{stored}#{idx}",
                "source": source,
                "url": clean_url(uri),
                "operation": op,
                "azure": host.endswith(".azure.com") or "/openai/deployments/" in uri,
                "stream": stream,
                "shape": shape(op, body, stream),
                "request": body,
                "response_status": status,
                "response_body": text,
                "response_body_reserialized": reserialized,
                "usage": normalise(usage),
                "response_model": model,
            }
        )
    return out


def table(title: str, counter: Counter[str]) -> list[str]:
    lines = [f"## {title}", "", "| value | pairs |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
    return [*lines, ""]


def build() -> tuple[str, str]:
    """The text of ``pairs.jsonl`` and of ``SUMMARY.md`` made from the stored captures."""
    sources = load_sources()
    pairs: list[Json] = []
    seen: set[str] = set()
    for path in sorted(p for p in RAW.rglob("*") if p.is_file()):
        stored = path.relative_to(RAW).as_posix()
        source = sources.get(stored, {"repo": None, "path": None, "commit": None})
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for pair in pairs_from(stored, doc, source):
            key = json.dumps(pair["request"], sort_keys=True) + "\x00" + pair["response_body"]
            if key in seen:
                continue
            seen.add(key)
            pairs.append(pair)
    pairs.sort(key=lambda p: p["id"])
    pairs_text = "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in pairs)
    lines = [
        "# Capture corpus summary",
        "",
        "Generated by `rebuild.py`; do not edit by hand.",
        "",
        f"Total pairs: {len(pairs)} (Azure: {sum(p['azure'] for p in pairs)}, "
        f"streamed: {sum(p['stream'] for p in pairs)})",
        "",
    ]
    lines += table("By operation", Counter(p["operation"] for p in pairs))
    lines += table("By shape", Counter(p["shape"] for p in pairs))
    lines += table("By response model", Counter(str(p["response_model"]) for p in pairs))
    lines += table("By source repository", Counter(str(p["source"]["repo"]) for p in pairs))
    return pairs_text, "\n".join(lines)


def main() -> None:
    pairs_text, summary = build()
    PAIRS.write_text(pairs_text, encoding="utf-8", newline="\n")
    SUMMARY.write_text(summary, encoding="utf-8", newline="\n")
    print(f"{pairs_text.count(chr(10))} pairs -> {PAIRS.relative_to(HERE.parents[2])}")


if __name__ == "__main__":
    main()
