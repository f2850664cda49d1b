"""Every policy expression of every spec shape compiles, and uses only the types APIM allows.

The API and product policies are rendered for the shapes that change what is rendered —
capture mode (buffered, passthrough, passthrough_usage: the forward-request), key or
managed-identity backends, one or several backends, token limits on or off, payload capture and
allowed unmetered operations — on each cloud (AzureCloud, AzureChinaCloud, AzureUSGovernment:
the managed-identity audience), and every ``@(…)`` / ``@{…}`` is compiled as C# 7 (``mcs
-langversion:7``), all of them in ONE library, with every namespace APIM may import in scope
(``test_policy.CS_USINGS``: an ambiguous name fails) against the real Newtonsoft.Json.

Then the compiled library's TypeRef and MemberRef tables (``monodis``, Debian ``mono-utils``)
are checked against APIM's table of allowed types (``tests/csharp/apim-allowed-types.txt``, a
copy with its URL and commit): every type a member is called on must be listed (members too,
where the table lists them); every type referenced at all must be listed, be one of the APIM
context's stand-ins (allowed by definition), or be one the compiler brings in for allowed
code (``COMPILER_INFRASTRUCTURE``, each with why). Missing tools fail under CI, skip elsewhere.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_policy import (
    _CS_APIM,
    _NEWTONSOFT,
    CS_REFERENCES,
    CS_USINGS,
    EUS,
    _cs_method_body,
    spec_with,
)

from aoai_helpers.azure.apim.policy import render_api_policy, render_product_policy
from aoai_helpers.clouds import CLOUDS

ALLOWED_FILE = Path(__file__).parent / "csharp" / "apim-allowed-types.txt"
#: Types the compiler references for code that only uses allowed members, with why.
COMPILER_INFRASTRUCTURE: dict[str, str] = {
    "System.Object": "the base of every type (closures of lambdas, boxing to object)",
    "System.Func`2": "the delegate of a lambda passed to System.Linq.Enumerable (Select, Where)",
    "System.Func`3": "the same, two arguments",
    "System.IDisposable": "foreach disposes its enumerator",
    "System.Collections.IEnumerator": "foreach's MoveNext on a generic enumerator",
    "System.Runtime.CompilerServices.CompilerGeneratedAttribute": "marks a lambda's closure",
    "System.Runtime.CompilerServices.RuntimeCompatibilityAttribute": "every assembly has it",
    "System.Runtime.CompilerServices.RuntimeHelpers": "array initialisers of constants",
    "System.RuntimeFieldHandle": "array initialisers of constants",
    "System.ValueType": "boxing of value types",
    "Newtonsoft.Json.JsonConverter": "the params argument of JToken.ToString(Formatting, …)",
    "System.Collections.Generic.IEqualityComparer`1": "Enumerable.Contains(…, comparer) takes"
    " the allowed StringComparer as one",
    "System.Collections.IEnumerable": "what a collection initialiser (new List<T> { … }) needs",
}
#: Of those, the ones only named in signatures: calling a member of one is not allowed.
SIGNATURE_ONLY = {
    "Newtonsoft.Json.JsonConverter",
    "System.Collections.Generic.IEqualityComparer`1",
    "System.Collections.IEnumerable",
}
#: The harness's own class (named values and the API path come through it).
HARNESS = "Program"


def _needs(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        reason = f"no {tool}: apt-get install {package}"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason} (.ci/run installs it)")
        pytest.skip(reason)
    return found


def _allowed() -> dict[str, set[str] | None]:
    """Type (CLR name, `N for generics) → allowed members (None: all)."""
    table: dict[str, set[str] | None] = {}
    for line in ALLOWED_FILE.read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, members = line.split("|")
        generic = re.fullmatch(r"(.+)<(.+)>", name)
        if generic:
            name = f"{generic.group(1)}`{len(generic.group(2).split(','))}"
        if members == "All" or members.startswith("All, except"):
            table[name] = None
        else:
            table[name] = {
                ".ctor" if m.strip() == "(Constructor)" else m.strip() for m in members.split(",")
            }
    return table


def _shape(capture: str, auth: str, backends: int, limits: bool, cloud: str) -> Callable[..., Any]:
    def change(d: dict[str, Any]) -> None:
        d["cloud"] = cloud
        d["capture"]["streaming"] = capture
        d["capture"]["payload"] = limits  # payload capture and unmetered calls with the limits
        d["capture"]["allow_unmetered"] = ["images", "files"] if limits else []
        d["backends"][0]["auth"] = auth
        if backends > 1:
            d["backends"].append(dict(EUS))
        if not limits:
            for sub in d["subscriptions"]:
                sub.pop("token_limit", None)

    return change


SHAPES = list(
    itertools.product(
        ("buffered", "passthrough", "passthrough_usage"),
        ("key", "managed_identity"),
        (1, 2),
        (True, False),
        sorted(CLOUDS),
    )
)


def _expressions(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    return [
        value
        for el in root.iter()
        for value in [*el.attrib.values(), el.text or ""]
        if value.strip().startswith(("@(", "@{"))
    ]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """The library of every distinct expression of every shape: (dll, renderings, expressions)."""
    mcs = _needs("mcs", "mono-mcs")
    if not _NEWTONSOFT:
        reason = "no Newtonsoft.Json for Mono: apt-get install libnewtonsoft-json5.0-cil"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason} (.ci/run installs it)")
        pytest.skip(reason)
    assert {cloud for *_, cloud in SHAPES} == {
        "AzureCloud",
        "AzureChinaCloud",
        "AzureUSGovernment",
    }
    seen: dict[str, None] = {}
    renderings = 0
    for shape in SHAPES:
        spec = spec_with(_shape(*shape))
        for xml in (render_api_policy(spec), render_product_policy(spec)):
            renderings += 1
            for code in _expressions(xml):
                seen.setdefault(code.strip(), None)
    methods = [
        f"    public static object E{i}(Context context) {{\n{_cs_method_body(code)}\n    }}"
        for i, code in enumerate(seen)
    ]
    source = (
        f"{CS_USINGS}\nusing Apim;\n\npublic static class {HARNESS}\n{{\n"
        "    public static string NV(string name) { return name; }\n"
        '    public static string ApiPath = "/openai";\n' + "\n".join(methods) + "\n}\n"
    )
    work = tmp_path_factory.mktemp("policy-types")
    (work / "apim.cs").write_text(_CS_APIM, "utf-8")
    (work / "expressions.cs").write_text(source, "utf-8")
    json_net = f"-r:{_NEWTONSOFT[-1]}"
    for args in (
        ["-target:library", "-out:apim.dll", "apim.cs"],
        ["-target:library", "-out:expressions.dll", "-r:apim.dll", json_net, *CS_REFERENCES, "x"],
    ):
        args = [a if a != "x" else "expressions.cs" for a in args]
        built = subprocess.run(
            [mcs, "-langversion:7", "-nologo", *args],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert built.returncode == 0, built.stdout + built.stderr
    return work / "expressions.dll", renderings, len(seen)


def test_every_shape_and_cloud_compiles(compiled: tuple[Path, int, int]) -> None:
    _, renderings, expressions = compiled
    assert renderings == 2 * len(SHAPES) == 2 * 3 * 2 * 2 * 2 * 3
    assert expressions > 30  # the API policy's expressions, per shape, deduplicated


def _monodis(option: str, dll: Path) -> str:
    monodis = _needs("monodis", "mono-utils")
    ran = subprocess.run(
        [monodis, option, str(dll)], capture_output=True, text=True, timeout=120, check=True
    )
    return ran.stdout


_TYPEREF = re.compile(r"^\d+: \[([^\]]+)\](\S+)$")


def typerefs(dll: Path) -> list[tuple[str, str]]:
    """(assembly, type) of every TypeRef row."""
    rows = [_TYPEREF.match(line.strip()) for line in _monodis("--typeref", dll).splitlines()]
    return [(m.group(1), m.group(2)) for m in rows if m]


def memberrefs(dll: Path) -> list[tuple[str, str, str]]:
    """(assembly, declaring type, member) of every MemberRef row (from its Resolved line)."""
    found = []
    for line in _monodis("--memberref", dll).splitlines():
        line = line.strip()
        if not line.startswith("Resolved:"):
            continue
        text = re.sub(r"^(class |valuetype )", "", line.removeprefix("Resolved:").strip())
        m = re.match(r"\[([^\]]+)\](.+)$", text)
        assert m is not None, line
        scope, rest = m.groups()
        if rest.endswith("..ctor"):
            kind, member = rest[: -len("..ctor")].split("<")[0], ".ctor"
        elif "<" in rest:
            kind, member = rest[: rest.index("<")], rest[rest.rindex(">") + 2 :]
        else:
            kind, member = rest.rsplit(".", 1)
        found.append((scope, kind, member))
    return found


def _outer(kind: str) -> str:
    return kind.split("/")[0]  # a nested type (List`1/Enumerator) belongs to its outer type


def _member_allowed(member: str, allowed: set[str]) -> bool:
    bare = re.sub(r"^(get_|set_|op_)", "", member)
    return member in allowed or bare in allowed


def test_expressions_use_only_the_types_apim_allows(compiled: tuple[Path, int, int]) -> None:
    dll, _, _ = compiled
    allowed = _allowed()
    refs = typerefs(dll)
    assert refs, "monodis listed no TypeRef"
    bad_types = sorted(
        f"[{scope}]{kind}"
        for scope, kind in refs
        if scope != "apim"
        and _outer(kind) not in allowed
        and _outer(kind) not in COMPILER_INFRASTRUCTURE
    )
    assert not bad_types, "types APIM does not allow: " + ", ".join(bad_types)
    bad_members = []
    for scope, kind, member in memberrefs(dll):
        if scope == "apim":
            continue  # the APIM context (IProxyRequestContext…): allowed by definition
        outer = _outer(kind)
        if outer in COMPILER_INFRASTRUCTURE and outer not in SIGNATURE_ONLY:
            continue
        members = allowed.get(outer, set())
        if members is not None and not _member_allowed(member, members):
            bad_members.append(f"[{scope}]{kind}::{member}")
    assert not bad_members, "members APIM does not allow: " + ", ".join(sorted(bad_members))


def test_the_type_check_can_fail(tmp_path: Path) -> None:
    """A library calling what the table does not allow (System.Type, JsonSerializerSettings,
    DateTime.ParseExact) is caught by the same reading of its tables."""
    mcs = _needs("mcs", "mono-mcs")
    if not _NEWTONSOFT:
        pytest.skip("no Newtonsoft.Json for Mono")
    (tmp_path / "bad.cs").write_text(
        "using System; using Newtonsoft.Json;\n"
        "public static class Bad {\n"
        "  public static object A(object o) { return o.GetType().Name; }\n"
        "  public static object B() { return new JsonSerializerSettings { DateParseHandling ="
        " DateParseHandling.None }; }\n"
        '  public static object C() { return DateTime.ParseExact("x", "o", null); }\n'
        "}\n",
        "utf-8",
    )
    subprocess.run(
        [mcs, "-nologo", "-target:library", "-out:bad.dll", f"-r:{_NEWTONSOFT[-1]}", "bad.cs"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    allowed = _allowed()
    kinds = {_outer(k) for _, k in typerefs(tmp_path / "bad.dll")}
    assert {"System.Type", "Newtonsoft.Json.JsonSerializerSettings"} <= kinds - set(allowed)
    members = {(k, m) for _, k, m in memberrefs(tmp_path / "bad.dll")}
    assert ("System.DateTime", "ParseExact") in members
    dt = allowed["System.DateTime"]
    assert dt is not None and not _member_allowed("ParseExact", dt)
