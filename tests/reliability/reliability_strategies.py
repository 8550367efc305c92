"""Arguments for gateway tools, derived from each tool's JSON ``inputSchema`` as ``tools/list``
returns it: plausible ones (isolation and secret probes) and hypothesis strategies that mix
schema-valid values with hostile ones (wrong types, huge strings, NUL characters, lone
surrogates inside JSON text, deep nesting, extra fields, secret-shaped text).

The official client cannot send a lone surrogate itself (its JSON encoder refuses), nor nest
deeper than its serializer allows; those reach the gateway as raw JSON-RPC frames instead
(see test_reliability_fuzz.py).
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

WRITE_TOOLS = frozenset(
    {
        "kora__append_event",
        "kora__write_agent_scratchpad",
        "kora__propose_convention",
        "kora__propose_policy_change",
        "kora__raise_escalation",
        "iso_node_create",
        "iso_node_supersede",
        "iso_link_create",
        "kora__decide_proposal",
        "kora__decide_escalation",
    }
)
OPERATOR_TOOLS = frozenset({"kora__decide_proposal", "kora__decide_escalation"})
#: Which objects a uuid argument names.
ID_KINDS = {
    "node_id": "node",
    "from_node_id": "node",
    "to_node_id": "node",
    "proposal_id": "proposal",
    "escalation_id": "escalation",
}
HUGE_TEXT = "h" * 70_000  # over the default 64 KiB payload cap
HUGER_TEXT = "H" * 1_100_000  # over the constitution's 1 MiB ceiling too
MAX_CLIENT_DEPTH = 200  # the official client serializes this deep; deeper goes as raw frames


def branches(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The alternatives of a property schema (``anyOf`` flattened), ``null`` last."""
    options = list(schema.get("anyOf", [schema]))
    return sorted(options, key=lambda s: s.get("type") == "null")


def string_fields(schema: Mapping[str, Any]) -> list[str]:
    """Properties that accept a string (enums and uuids included)."""
    return [
        name
        for name, prop in schema.get("properties", {}).items()
        if any(b.get("type") == "string" for b in branches(prop))
    ]


def object_fields(schema: Mapping[str, Any]) -> list[str]:
    """Properties that accept a JSON object, or any JSON value."""
    return [
        name
        for name, prop in schema.get("properties", {}).items()
        if any(b.get("type") == "object" or "type" not in b for b in branches(prop))
    ]


@dataclass
class Objects:
    """Ids of objects the probes may name, by kind (``node``, ``proposal``, ``escalation``),
    and the kind of each proposal."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    proposal_kinds: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, object_id: str) -> None:
        self.ids.setdefault(kind, []).append(str(object_id))

    def first(self, kind: str, n: int = 0) -> str:
        found = self.ids.get(kind) or [str(uuid.uuid4())]
        return found[min(n, len(found) - 1)]


def plausible_value(name: str, prop: Mapping[str, Any], objects: Objects, n: int = 0) -> Any:
    """A value a well-behaved client would send for property ``name``."""
    first = branches(prop)[0]
    if name in ID_KINDS:
        return objects.first(ID_KINDS[name], n)
    if "enum" in first:
        return first["enum"][0]
    if name == "event_type":
        return "kora.probe.sent"
    if name in ("node_type", "link_type"):
        return "probe"
    if name == "policy_key":
        return "policy.kora_disabled"
    if name == "proposed_value":
        return False
    if first.get("type") == "object":
        return {"probe": True}
    if first.get("type") == "integer":
        return 5
    if first.get("type") == "boolean":
        return False
    return f"probe {name}"


def plausible_arguments(
    tool: str, schema: Mapping[str, Any], objects: Objects, *, with_optional: bool = False
) -> dict[str, Any]:
    """Required arguments (and optionally every other text/object one) with plausible values."""
    required = set(schema.get("required", []))
    args: dict[str, Any] = {}
    node_n = 0
    for name, prop in schema.get("properties", {}).items():
        if name in ("workspace_id", "idempotency_key"):
            continue
        if name in required or (with_optional and name not in ("content_hash", "limit")):
            args[name] = plausible_value(name, prop, objects, node_n)
            if ID_KINDS.get(name) == "node":
                node_n += 1
    if tool == "kora__decide_proposal":
        args["proposal_kind"] = objects.proposal_kinds.get(args["proposal_id"], "convention")
    if tool == "kora__write_agent_scratchpad" and "content_uri" in args:
        del args["content_uri"]  # content and content_uri are alternatives
    return args


# -------------------------------------------------------------------------------- hostile

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_scalars |= st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def deep(depth: int, leaf: Any = "x") -> Any:
    """``depth`` nested objects around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = {"d": value}
    return value


hostile_text = st.sampled_from(
    [
        "",
        " ",
        "a\x00b",
        "\x00",
        HUGE_TEXT,
        HUGER_TEXT,
        "'; DROP TABLE kronicle.iso_nodes; --",
        "${ISOKRON_DSN}",
        "\u202e\u200b\ufeff",
        "🦜" * 300,
        "delete all the things",  # the default constitution escalates this wording
        "governance.policy.set",
        "../../etc/passwd",
        '{"a": "\\ud800"}',  # a lone surrogate, once the SDK parses this JSON text
        "[" * 3000 + "]" * 3000,  # JSON text nested beyond the parser
        "wsk_" + "Q" * 40,  # secret shapes the default constitution denies
        "AKIAQQQQQQQQQQQQQQQQ",
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
    ]
) | st.text(max_size=40)

wrong_types = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(json_values, max_size=3)
    | st.dictionaries(st.text(max_size=5), json_values, max_size=3)
)
deep_objects = st.integers(min_value=60, max_value=MAX_CLIENT_DEPTH).map(deep)


def _good_string(name: str, branch: Mapping[str, Any], objects: Objects) -> st.SearchStrategy[Any]:
    """Strings a well-behaved client could send for ``name``."""
    if branch.get("format") == "uuid":
        known = [
            i for kind in ("node", "proposal", "escalation") for i in objects.ids.get(kind, [])
        ]
        return (st.sampled_from(known) if known else st.nothing()) | st.uuids().map(str)
    if "enum" in branch:
        return st.sampled_from(branch["enum"])
    if name == "event_type":
        return st.from_regex(r"kora\.[a-z]{1,8}\.[a-z_]{1,8}", fullmatch=True)
    if name in ("node_type", "link_type"):
        return st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True)
    if name == "policy_key":
        return st.sampled_from(["policy.kora_node_search_default_limit", "policy.nope"])
    if name == "idempotency_key":
        return st.text(min_size=1, max_size=30)
    return st.text(max_size=60)


def _hostile_string(name: str) -> st.SearchStrategy[Any]:
    """Strings meant to break things, some aimed at the argument they are sent as."""
    aimed: list[Any] = (
        ["governance.forged.x", "gateway.x.y", "Kora.X"] if name == "event_type" else []
    )
    if name == "workspace_id":
        aimed = ["", "ws-nope", "x" * 300]
    if name == "idempotency_key":
        aimed = ["x" * 201]
    if name == "policy_key":
        aimed = ["policy.kora_disabled", "policy.kora_rate_limit_per_minute"]
    return (st.sampled_from(aimed) if aimed else st.nothing()) | hostile_text


def value_strategy(
    name: str, prop: Mapping[str, Any], objects: Objects, *, hostile: bool
) -> st.SearchStrategy[Any]:
    """Values for one property: what its schema allows, plus (``hostile``) bad ones."""
    options: list[st.SearchStrategy[Any]] = []
    for branch in branches(prop):
        kind = branch.get("type")
        if kind == "string":
            options.append(_good_string(name, branch, objects))
            if hostile:
                options.append(_hostile_string(name))
        elif kind == "integer":
            low = int(branch.get("minimum", -10))
            options.append(st.integers(min_value=low, max_value=500))
            if hostile:
                options.append(st.integers(min_value=low - 3, max_value=10**6) | st.integers())
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "object":
            options.append(json_values.filter(lambda v: isinstance(v, dict)))
            if hostile:
                options.append(deep_objects)
                options.append(hostile_text.filter(lambda t: t[:1] in "{["))  # JSON text for it
        elif kind == "null":
            options.append(st.none())
        else:  # any JSON value
            options.append(json_values)
            if hostile:
                options.append(deep_objects)
    if hostile:
        options.append(wrong_types)
    return st.one_of(*options)


@st.composite
def tool_arguments(draw: st.DrawFn, schema: Mapping[str, Any], objects: Objects) -> dict[str, Any]:
    """A call's arguments. Half the calls are what a well-behaved client would send (values
    its schema allows, no workspace_id); the others mix in hostile values, sometimes drop a
    required argument, name a workspace, or add an argument the tool does not take."""
    hostile = draw(st.booleans())
    required = set(schema.get("required", []))
    args: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        if not hostile and name in ("workspace_id", "content_hash"):
            continue
        odds = 19 if name in required else 8
        if not hostile and name in required:
            odds = 20
        if draw(st.integers(0, 19)) < odds:
            args[name] = draw(value_strategy(name, prop, objects, hostile=hostile))
    if hostile and draw(st.integers(0, 4)) == 0:
        extra = draw(st.text(min_size=1, max_size=12))
        if extra not in args:
            args[extra] = draw(json_values)
    return args


# ------------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Secret:
    """A secret-shaped string and the parts of it that must never be found at rest."""

    shape: str
    text: str
    needles: tuple[str, ...]


def secrets_for_one_probe() -> list[Secret]:
    """One fresh secret of every shape the default constitution denies (random, unique)."""
    r = uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits
    body = base64.b64encode(os.urandom(144)).decode()  # 192 characters, three PEM lines
    pem_lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + "\n".join(pem_lines)
        + "\n-----END RSA PRIVATE KEY-----"
    )
    upper = r.upper()
    return [
        Secret("wsk", f"wsk_{r[:40]}", (r[:14],)),
        Secret("openai", f"sk-{r[:48]}", (r[:14],)),
        Secret("slack", f"xoxb-1234567890-{r[:24]}", (r[:14],)),
        Secret("aws", f"AKIA{upper[:16]}", (upper[:14],)),
        Secret("github", f"ghp_{r[:36]}", (r[:14],)),
        Secret(
            "pem",
            pem,
            tuple(line[:14] for line in pem_lines) + tuple(line[-14:] for line in pem_lines),
        ),
    ]


def embed(secret: Secret) -> str:
    """The secret inside an innocent sentence, as an agent would paste it."""
    return f"here is the key: {secret.text} (please keep it)"
