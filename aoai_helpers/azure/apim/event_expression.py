"""The C# event expression both ``log-to-eventhub`` policies write (outbound and on-error), with
the byte budgets it shrinks ``Request`` and the response to (as the local gateway does), and
:func:`policy_fields`, which reads back the fields a rendered policy writes. Rendered from
:mod:`aoai_helpers.core.shrink`'s constants so the C# and Python shrinkers cannot drift.
Imports ``core`` and :mod:`.templating`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Final

from aoai_helpers.azure.apim.templating import render
from aoai_helpers.core import shrink
from aoai_helpers.core.events import LOG_TO_EVENTHUB_LIMIT
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "EVENT_BUDGET",
    "REQUEST_BUDGET",
    "RESPONSE_BUDGET",
    "cs_string",
    "event_expression",
    "policy_fields",
]

#: Budgets in bytes, as in the local gateway: the event stays under half the 200 KB limit.
EVENT_BUDGET: Final = LOG_TO_EVENTHUB_LIMIT // 2


REQUEST_BUDGET: Final = EVENT_BUDGET // 2


RESPONSE_BUDGET: Final = EVENT_BUDGET // 3


def event_expression() -> str:
    """The event expression (C#, not XML-escaped) both ``log-to-eventhub`` policies use:
    :data:`_EVENT` with the request budget and :mod:`aoai_helpers.core.shrink`'s constants."""

    def array(names: tuple[str, ...]) -> str:
        return "new[] { " + ", ".join(cs_string(n) for n in names) + " }"

    return render(
        _EVENT,
        {
            "REQUEST_BUDGET": str(REQUEST_BUDGET),
            "MIN_CAP": str(shrink.MIN_CAP),
            "MARKER": cs_string(shrink.MARKER),
            "OMITTED": cs_string(shrink.OMITTED),
            "ITEM_FIELDS": array(shrink.ITEM_FIELDS),
            "TEXT_FIELDS": array(shrink.TEXT_FIELDS),
            "LIST_FIELDS": array(shrink.LIST_FIELDS),
        },
    )


def cs_string(value: str) -> str:
    """A C# regular string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f]", lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


def policy_fields(xml: str) -> list[str]:
    """The top-level field names the policy's event expression writes, in order.

    Each ``log-to-eventhub`` expression must end in ``return new JObject(new JProperty("Name",
    …), …)``; all of them must write the same fields (``ConfigError`` otherwise).
    """
    root = ET.fromstring(xml)
    lists = [_event_fields(el.text or "") for el in root.iter("log-to-eventhub")]
    if not lists:
        raise ConfigError("the policy has no log-to-eventhub")
    if any(fields != lists[0] for fields in lists[1:]):
        raise ConfigError("the policy's log-to-eventhub expressions write different fields")
    return lists[0]


def _event_fields(code: str) -> list[str]:
    opener = "return new JObject("
    start = code.rfind(opener)
    if start < 0:
        raise ConfigError(f"log-to-eventhub does not end in {opener}…)")
    fields = []
    for arg in _arguments(code, start + len(opener)):
        m = re.fullmatch(r'\s*new\s+JProperty\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*,.*\)\s*', arg, re.S)
        if m is None:
            raise ConfigError(f'event argument is not new JProperty("Name", …): {arg.strip()[:60]}')
        fields.append(m.group(1))
    return fields


def _arguments(code: str, i: int) -> list[str]:
    """The comma-separated arguments of the call whose ``(`` ends just before ``code[i]``."""
    args: list[str] = []
    depth, begin = 0, i
    while i < len(code):
        c = code[i]
        if c == '"' or (c == "@" and code[i + 1 : i + 2] == '"'):
            i = _string_end(code, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                args.append(code[begin:i])
                return [a for a in args if a.strip()]
            depth -= 1
        elif c == "," and depth == 0:
            args.append(code[begin:i])
            begin = i + 1
        i += 1
    raise ConfigError("unbalanced parentheses in the event expression")


def _string_end(code: str, i: int) -> int:
    """Index just after the C# string literal starting at ``code[i]`` (``"…"`` or ``@"…"``)."""
    verbatim = code[i] == "@"
    i += 2 if verbatim else 1
    while i < len(code):
        c = code[i]
        if (verbatim and c == '"' and code[i + 1 : i + 2] == '"') or (not verbatim and c == "\\"):
            i += 2  # "" in a verbatim string, \x in a regular one
        elif c == '"':
            return i + 1
        else:
            i += 1
    raise ConfigError("unterminated string in the event expression")


#: The event both ``log-to-eventhub`` policies write (outbound and on-error), as C# — XML-escaped
#: where it is rendered into the template (``{%EVENT%}``), so the two copies cannot drift. It
#: cannot fail: each part is computed under a guard, and an exception keeps the fields known so
#: far and puts the exception's type into ``Request`` as ``{"_unloggable": "<type>"}`` (the
#: field list is the contract, ``V2_FIELDS``). ``Request`` is shrunk as
#: :func:`aoai_helpers.core.shrink.shrink_request` does: same steps, same binary searches, same stats
#: (string lengths in code points, sizes in UTF-8 bytes of compact JSON). No helper methods,
#: delegates or recursion: APIM expressions are one method body, and the allowed types list no
#: ``Func``; the strings and lists are changed in place and measured, never deep-copied.
_EVENT: Final = r"""@{
            string failure = null;
            string requestId = null, execTime = null, region = null, serviceName = null;
            string subscriptionId = null, subscriptionName = null, productName = null;
            string userName = null, userEmail = null, apiName = null, operationId = null;
            string operation = "other", deployment = null, version = null;
            bool streaming = false;
            int status = 500;
            try {
                requestId = context.RequestId.ToString();
                execTime = context.Timestamp.ToString("o").Substring(0, 23) + "Z";
                region = context.Deployment.Region;
                serviceName = context.Deployment.ServiceName;
                subscriptionId = context.Subscription?.Id;
                subscriptionName = context.Subscription?.Name;
                productName = context.Product?.Name;
                string last = context.User == null ? "" : (context.User.LastName ?? "");
                string user = context.User == null ? "" : ((context.User.FirstName ?? "") + " " + (last == "-" ? "" : last)).Trim();
                userName = user.Length > 0 ? user : null;
                userEmail = context.User?.Email;
                apiName = context.Api?.Name;
                operationId = context.Operation?.Id;
                operation = context.Variables.GetValueOrDefault<string>("aoai-operation", "other");
                string named = context.Variables.GetValueOrDefault<string>("aoai-deployment", "");
                deployment = named.Length > 0 ? named : null;
                string asked = context.Variables.GetValueOrDefault<string>("aoai-api-version", "");
                version = asked.Length > 0 ? asked : null;
                streaming = context.Variables.GetValueOrDefault<bool>("aoai-streaming", false);
                status = context.Variables.GetValueOrDefault<int>("aoai-status", 500);
            } catch (Exception e) {
                failure = "Exception";
                try { failure = e.ToString(); } catch (Exception) { }
            }
            JToken usage = null;
            string model = null;
            string response = null;
            JToken request = null;
            try {
                string result = context.Variables.GetValueOrDefault<string>("aoai-result", "");
                JObject found = result.Length > 0 ? JObject.Parse(result) : null;
                JToken fu = found?["usage"];
                JToken fm = found?["model"];
                JToken fr = found?["response"];
                usage = fu != null && fu.Type == JTokenType.Object ? fu : null;
                model = fm != null && fm.Type == JTokenType.String ? (string)fm : null;
                response = fr != null && fr.Type == JTokenType.String ? (string)fr : null;
                bool payload = "{{aoai-capture-payload}}".Trim().ToLowerInvariant() == "true";
                string raw = context.Variables.GetValueOrDefault<string>("aoai-request", "");
                if (raw.Length > 0 && (payload || (usage == null && status >= 200 && status <= 299))) {
                    /* the request copy, shrunk to the budget as aoai_helpers.core.shrink.shrink_request */
                    JObject whole = JObject.Parse(raw);
                    int budget = {%REQUEST_BUDGET%};
                    string marker = {%MARKER%};
                    string[] itemFields = {%ITEM_FIELDS%};
                    string[] textFields = {%TEXT_FIELDS%};
                    string[] listFields = {%LIST_FIELDS%};
                    string itemField = itemFields.FirstOrDefault(f => whole.Property(f) != null);
                    /* every string value (keys are not counted), its text and its length in code
                       points; dates Json.NET parsed are strings again, as the caller sent them */
                    List<JValue> values = new List<JValue>();
                    List<string> texts = new List<string>();
                    List<int> lengths = new List<int>();
                    long strings = 0;
                    long chars = 0;
                    int longest = 0;
                    foreach (JProperty top in whole.Properties().ToList()) {
                        bool isItems = top.Name == itemField;
                        bool isText = textFields.Contains(top.Name);
                        List<JValue> under = top.Value is JValue ? new List<JValue> { (JValue)top.Value } : ((JContainer)top.Value).Descendants().OfType<JValue>().ToList();
                        foreach (JValue v in under) {
                            if (v.Type == JTokenType.Date) { string iso = v.ToString(Newtonsoft.Json.Formatting.None); v.Value = iso.Substring(1, iso.Length - 2); }
                            if (v.Type != JTokenType.String) { continue; }
                            string s = (string)v.Value;
                            int n = s.Length;
                            for (int i = 0; i + 1 < s.Length; i++) {
                                if (char.IsHighSurrogate(s[i]) && char.IsLowSurrogate(s[i + 1])) { n--; i++; }
                            }
                            values.Add(v);
                            texts.Add(s);
                            lengths.Add(n);
                            longest = Math.Max(longest, n);
                            if (isItems && n > 0) { strings++; }
                            if (isText) { chars += n; }
                        }
                    }
                    if (Encoding.UTF8.GetByteCount(whole.ToString(Newtonsoft.Json.Formatting.None)) <= budget) {
                        request = whole;
                    } else {
                        JToken items = itemField == null ? null : whole[itemField];
                        long count = 1;
                        if (items == null || items.Type == JTokenType.Null) { count = 0; }
                        else if (items.Type == JTokenType.Array) { count = ((JArray)items).Count; }
                        else if (items.Type == JTokenType.Object) { count = ((JObject)items).Count > 0 ? 1 : 0; }
                        else if (items.Type == JTokenType.String) { count = ((string)items).Length > 0 ? 1 : 0; }
                        else if (items.Type == JTokenType.Boolean) { count = (bool)items ? 1 : 0; }
                        else if (items.Type == JTokenType.Float) { count = (double)items != 0 ? 1 : 0; }
                        else if (items.Type == JTokenType.Integer) { count = items.ToString(Newtonsoft.Json.Formatting.None) != "0" ? 1 : 0; }
                        JObject stats = new JObject(new JProperty("items", count), new JProperty("strings", strings), new JProperty("chars", chars));
                        int room = budget - Encoding.UTF8.GetByteCount(new JObject(new JProperty(marker, stats.DeepClone())).ToString(Newtonsoft.Json.Formatting.None)) - 1;
                        /* step 1: the largest cap on every string that fits (binary search, as
                           shrink._largest: 0 first, then upper midpoints); then applied once more */
                        int cap = -1;
                        int lo = 0;
                        int hi = longest;
                        int probe = 0;
                        int chosen = -1;
                        bool first = true;
                        while (true) {
                            int c = chosen >= 0 ? chosen : probe;
                            for (int k = 0; k < values.Count; k++) {
                                string s = texts[k];
                                if (lengths[k] <= c) { values[k].Value = s; continue; }
                                int units = 0;
                                for (int n = 0; n < c; n++) {
                                    units += char.IsHighSurrogate(s[units]) && units + 1 < s.Length && char.IsLowSurrogate(s[units + 1]) ? 2 : 1;
                                }
                                values[k].Value = s.Substring(0, units) + "\u2026";
                            }
                            if (chosen >= 0) { break; }
                            bool fits = Encoding.UTF8.GetByteCount(whole.ToString(Newtonsoft.Json.Formatting.None)) <= room;
                            if (first) {
                                first = false;
                                if (!fits) { chosen = {%MIN_CAP%}; continue; }
                            } else if (fits) { lo = probe; } else { hi = probe - 1; }
                            if (lo >= hi) { cap = lo; chosen = Math.Max(cap, {%MIN_CAP%}); continue; }
                            probe = (lo + hi + 1) / 2;
                        }
                        if (cap >= {%MIN_CAP%}) {
                            whole[marker] = stats;
                            request = whole;
                        } else {
                            /* step 2: strings at the minimum cap, and the lists of the prompt (and
                               content parts) thinned to their first and last h items around
                               {"_omitted": n}, h the largest that fits; innermost lists first */
                            List<JProperty> lists = whole.Descendants().OfType<JProperty>().Where(p => p.Value.Type == JTokenType.Array && (listFields.Contains(p.Name) || p.Name == "content")).ToList();
                            lists.Reverse();
                            List<JArray> originals = lists.Select(p => (JArray)p.Value).ToList();
                            bool[] replaced = new bool[lists.Count];
                            int keep = -1;
                            lo = 0;
                            hi = originals.Count == 0 ? 0 : originals.Max(a => a.Count);
                            probe = 0;
                            chosen = -1;
                            first = true;
                            while (true) {
                                int h = chosen >= 0 ? chosen : probe;
                                for (int k = 0; k < lists.Count; k++) {
                                    JArray a = originals[k];
                                    if (a.Count > 2 * h + 1) {
                                        JArray thin = new JArray();
                                        for (int i = 0; i < h; i++) { thin.Add(a[i]); }
                                        thin.Add(new JObject(new JProperty({%OMITTED%}, a.Count - 2 * h)));
                                        for (int i = a.Count - h; i < a.Count; i++) { thin.Add(a[i]); }
                                        lists[k].Value = thin;
                                        replaced[k] = true;
                                    } else if (replaced[k]) {
                                        lists[k].Value = a;
                                        replaced[k] = false;
                                    }
                                }
                                if (chosen >= 0) { break; }
                                bool fits = Encoding.UTF8.GetByteCount(whole.ToString(Newtonsoft.Json.Formatting.None)) <= room;
                                if (first) {
                                    first = false;
                                    if (!fits) { break; }
                                } else if (fits) { lo = probe; } else { hi = probe - 1; }
                                if (lo >= hi) { keep = lo; chosen = keep; continue; }
                                probe = (lo + hi + 1) / 2;
                            }
                            if (keep >= 0) {
                                whole[marker] = stats;
                                request = whole;
                            } else {
                                request = new JObject(new JProperty(marker, stats));
                            }
                        }
                    }
                }
            } catch (Exception e) {
                if (failure == null) {
                    failure = "Exception";
                    try { failure = e.ToString(); } catch (Exception) { }
                }
            }
            string unloggable = null;
            if (failure != null) {
                int end = 0;
                while (end < failure.Length && (char.IsLetterOrDigit(failure[end]) || failure[end] == '.' || failure[end] == '_')) { end++; }
                unloggable = failure.Substring(0, end);
                unloggable = unloggable.Substring(unloggable.LastIndexOf('.') + 1);
                if (unloggable.Length == 0) { unloggable = "Exception"; }
            }
            return new JObject(
                new JProperty("EventVersion", 2),
                new JProperty("RequestId", requestId),
                new JProperty("ExecTimeUTC", execTime),
                new JProperty("GatewayRegion", region),
                new JProperty("GatewayServiceName", serviceName),
                new JProperty("SubscriptionId", subscriptionId),
                new JProperty("SubscriptionName", subscriptionName),
                new JProperty("ProductName", productName),
                new JProperty("UserName", userName),
                new JProperty("UserEmail", userEmail),
                new JProperty("ApiName", apiName),
                new JProperty("OperationId", operationId),
                new JProperty("Operation", operation),
                new JProperty("DeploymentName", deployment),
                new JProperty("ApiVersion", version),
                new JProperty("IsStreaming", streaming),
                new JProperty("StatusCode", status),
                new JProperty("Model", model),
                new JProperty("Usage", usage),
                new JProperty("Request", unloggable != null ? new JObject(new JProperty("_unloggable", unloggable)) : request),
                new JProperty("ResponseString", response)
            ).ToString(Newtonsoft.Json.Formatting.None);
        }"""
