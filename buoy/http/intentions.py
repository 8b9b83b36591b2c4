"""``/v1/connect/intentions``: list, read, write and evaluate intentions.

Both of Consul's APIs: by name (``/exact``, the modern one: an upsert and a delete that never fail for a
missing pair) and the legacy one by ID (``POST`` creates and refuses a pair that exists, ``/:uuid``). Reads
are blocking-capable and honour the consistency modes. Errors are Consul's: most refusals of a write are
500s, as Consul's RPC errors are; a body that does not decode is a 400 (500 on the legacy create).

The server makes the ID and the time of a legacy write; rows written by name have neither, as in Consul.
Consul CE has no namespaces or partitions: any but ``default`` is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from buoy.connect.intentions import decide, default_for
from buoy.core.commands import Command, IntentionDelete, IntentionSet
from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed, Invalid, NotFound
from buoy.core.spiffe import WILDCARD
from buoy.http.blocking import blocking
from buoy.http.context import agent_of, server_of
from buoy.http.decode import read_json
from buoy.http.respond import json_response
from buoy.server.state.intentions import IntentionTable
from buoy.server.state.store import StateStore, Topic

routes = web.RouteTableDef()

TOPIC: Topic = ("intentions",)
NOT_FOUND = "Intention not found"
ACTIONS = ("allow", "deny")
# Consul's limits on opaque values (metaValueMaxLength, metaMaxKeyPairs, metaKeyMaxLength).
MAX_VALUE, MAX_PAIRS, MAX_KEY = 512, 64, 128
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})
HEADER_MATCHES = ("Present", "Exact", "Prefix", "Suffix", "Regex")
_HEX = frozenset(string.hexdigits)


def _q(text: str) -> str:
    """Go's %q, near enough: a double-quoted string."""
    return json.dumps(text, ensure_ascii=False)


# ---- request bodies ---------------------------------------------------------------------------------


def _permissions(raw: Any) -> list[dict[str, Any]] | None:
    """L7 permissions as Consul stores them (empty fields left out); kept and returned, not enforced yet."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise DecodeFailed("Intention.Permissions: expected a list")
    out = []
    for j, item in enumerate(raw):
        p = Fields(item, f"Intention.Permissions[{j}]")
        perm: dict[str, Any] = {"Action": p.str("Action")}
        if p.has("HTTP"):
            h = Fields(p.obj("HTTP"), f"Intention.Permissions[{j}].HTTP")
            http: dict[str, Any] = {k: h.str(k) for k in ("PathExact", "PathPrefix", "PathRegex") if h.str(k)}
            headers = h.raw("Header", [])
            if not isinstance(headers, list):
                raise DecodeFailed(f"Intention.Permissions[{j}].HTTP.Header: expected a list")
            if headers:
                http["Header"] = [_header(Fields(x, f"Intention.Permissions[{j}].HTTP.Header[{k}]"))
                                  for k, x in enumerate(headers)]
            methods = h.str_list("Methods")
            if methods:
                http["Methods"] = [m.upper() for m in methods]  # Consul upper-cases them before it validates
            perm["HTTP"] = http
        if p.has("JWT"):
            perm["JWT"] = p.obj("JWT")
        out.append(perm)
    return out


def _header(h: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": h.str("Name")}
    if h.bool("Present"):
        out["Present"] = True
    out.update((k, h.str(k)) for k in HEADER_MATCHES[1:] if h.str(k))
    if h.bool("Invert"):
        out["Invert"] = True
    return out


def _decode(body: Any) -> dict[str, Any]:
    """An Intention from a request body, every field typed; unknown fields are ignored, as Consul's decoder
    ignores them. Precedence, times, Hash and indexes are the server's and are ignored too."""
    f = Fields(body, "Intention")
    ixn: dict[str, Any] = {k: f.str(k) for k in (
        "ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName", "SourcePartition",
        "DestinationPartition", "SourcePeer", "SourceSamenessGroup", "SourceType", "Action")}
    ixn["Meta"] = f.str_map("Meta")
    ixn["Permissions"] = _permissions(f.raw("Permissions"))
    ixn["SourceType"] = ixn["SourceType"] or "consul"
    return ixn


def _row(ixn: dict[str, Any]) -> dict[str, Any]:
    """What the state machine keeps of a checked intention (it adds namespaces, precedence, times, indexes)."""
    return {k: ixn[k] for k in ("ID", "Description", "SourceName", "DestinationName", "SourceType", "Action",
                                "Permissions", "Meta")}


def _refuse_tenancy(ixn: dict[str, Any]) -> None:
    """The legacy endpoints' checks of partitions and namespaces in the body (400s, from the HTTP layer)."""
    for side in ("Destination", "Source"):
        if ixn[f"{side}Partition"].lower() not in ("", "default"):
            raise Invalid(f"Cannot specify a {side.lower()} partition with this endpoint")
    for name in ("SourceNS", "DestinationNS"):
        if ixn[name].lower() not in ("", "default"):
            raise Invalid(f"Invalid {name}({ixn[name]}): Namespaces is a Consul Enterprise feature")


def _refuse_elsewhere(ixn: dict[str, Any]) -> None:
    """Sources these endpoints cannot take (Consul: config entries only)."""
    for name in ("SourcePeer", "SourceSamenessGroup"):
        if ixn[name]:
            raise Failed(f"{name} field is not supported on this endpoint. Use config entries instead")


def _partial_wildcard(name: str) -> bool:
    return name != WILDCARD and WILDCARD in name


def _legacy_problems(ixn: dict[str, Any]) -> None:
    """Consul's Intention.Validate for the legacy writes: every problem, in its order, on one line."""
    problems = [f"{k} must be set" for k in ("SourceName", "DestinationName") if not ixn[k]]
    problems += [f"{k}: wildcard character '*' cannot be used with partial values"
                 for k in ("SourceName", "DestinationName") if _partial_wildcard(ixn[k])]
    if len(ixn["Description"]) > MAX_VALUE:
        problems.append(f"Description exceeds maximum length {MAX_VALUE}")
    meta = ixn["Meta"]
    if len(meta) > MAX_PAIRS:
        problems.append(f"Meta exceeds maximum element count {MAX_PAIRS}")
    for k in sorted(meta):
        if len(k) > MAX_KEY:
            problems.append(f"Meta key {_q(k)} exceeds maximum length {MAX_KEY}")
        if len(meta[k]) > MAX_VALUE:
            problems.append(f"Meta value for key {_q(k)} exceeds maximum length {MAX_VALUE}")
    if ixn["Action"] not in ACTIONS:
        problems.append("Action must be set to 'allow' or 'deny'")
    if ixn["Permissions"]:
        problems.append("Permissions must not be set when using the legacy APIs")
    if ixn["SourceType"] != "consul":
        problems.append("SourceType must be set to 'consul'")
    if problems:
        n = len(problems)
        raise Failed(f"{n} error{'s' if n > 1 else ''} occurred: " + "; ".join(problems))


def _upsert_problem(ixn: dict[str, Any], i: int) -> str | None:
    """Consul's validation of a source in the destination's service-intentions entry (``Sources[i]``)."""
    src = f"Sources[{i}]"
    perms = ixn["Permissions"] or []
    if _partial_wildcard(ixn["DestinationName"]):
        return "Name: wildcard character '*' cannot be used with partial values"
    if _partial_wildcard(ixn["SourceName"]):
        return f"{src}.Name: wildcard character '*' cannot be used with partial values"
    if len(ixn["Description"]) > MAX_VALUE:
        return f"{src}.Description exceeds maximum length {MAX_VALUE}"
    if not perms and ixn["Action"] not in ACTIONS:
        return f"{src}.Action must be set to 'allow' or 'deny'"
    if perms and ixn["Action"]:
        return f"{src}.Action must be omitted if Permissions are specified"
    if perms and ixn["DestinationName"] == WILDCARD:
        return f"{src}.Permissions cannot be specified on intentions with wildcarded destinations"
    if ixn["SourceType"] != "consul":
        return f"{src}.Type must be set to 'consul'"
    return next((p for j, perm in enumerate(perms) if (p := _permission_problem(f"{src}.Permissions[{j}]", perm))),
                None)


def _permission_problem(where: str, perm: dict[str, Any]) -> str | None:
    if perm["Action"] not in ACTIONS:
        return f"{where}.Action must be set to 'allow' or 'deny'"
    http = perm.get("HTTP")
    if http is None:
        return f"{where}.HTTP is required"
    for key in ("PathExact", "PathPrefix"):
        if key in http and not http[key].startswith("/"):
            return f"{where}.HTTP.{key} doesn't start with '/': {_q(http[key])}"
    paths = sum(1 for k in ("PathExact", "PathPrefix", "PathRegex") if k in http)
    if paths > 1:
        return f"{where}.HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex"
    for k, hdr in enumerate(http.get("Header", ())):
        if not hdr["Name"]:
            return f"{where}.HTTP.Header[{k}] missing required Name field"
        if sum(1 for m in HEADER_MATCHES if m in hdr) != 1:
            return f"{where}.HTTP.Header[{k}] should only contain one of Present, Exact, Prefix, Suffix, or Regex"
    methods = http.get("Methods", [])
    for n, m in enumerate(methods):
        if m not in HTTP_METHODS:
            return f"{where}.HTTP.Methods contains an invalid method {_q(m)}"
        if m in methods[:n]:
            return f"{where}.HTTP.Methods contains {_q(m)} more than once"
    if not paths and not http.get("Header") and not methods:
        return f"{where}.HTTP should not be empty"
    providers = (perm.get("JWT") or {}).get("Providers") or []
    if any(not isinstance(p, dict) or not p.get("Name") for p in providers):
        return "JWT provider name is required"
    return None


# ---- names in query strings -------------------------------------------------------------------------


def _name(param: str, side: str, value: str) -> str:
    """The service name in ``name``, ``namespace/name`` or ``partition/namespace/name``."""
    if value.startswith("peer:"):
        raise Failed(f"{param} {_q(value)} is invalid: cannot specify a peer here")
    parts = value.split("/")
    if len(parts) > 3:
        raise Failed(f"{param} {_q(value)} is invalid: input can contain at most two '/'")
    if len(parts) == 3 and parts[0].lower() not in ("", "default"):
        raise Invalid(f"Invalid {side}Partition({parts[0]}): Partitions is a Consul Enterprise feature")
    if len(parts) > 1 and parts[-2].lower() not in ("", "default"):
        raise Invalid(f"Invalid {side}NS({parts[-2]}): Namespaces is a Consul Enterprise feature")
    return parts[-1]


def _param(request: web.Request, param: str, allow_empty: bool = True) -> str:
    values = request.query.getall(param, [])
    if len(values) != 1 or not (values[0] or allow_empty):
        raise Failed(f"required query parameter '{param}' not set")
    return values[0]


def _pair(request: web.Request, allow_empty: bool = True) -> tuple[str, str]:
    source = _param(request, "source", allow_empty)
    destination = _param(request, "destination", allow_empty)
    return _name("source", "Source", source), _name("destination", "Destination", destination)


def uuid_problem(text: str) -> str | None:
    """Why Consul's UUID index refuses an ID (go-memdb's parsing), or None for a well-formed one."""
    if len(text) != 36:
        return "UUID must be 36 characters"
    if (hyphens := text.count("-")) > 4:
        return f'UUID should have maximum of 4 "-"; got {hyphens}'
    digits = text.replace("-", "")
    if len(digits) % 2:
        return "Input (without hyphens) must be even length"
    bad = next((c for c in digits if c not in _HEX), None)
    return f"Invalid UUID: encoding/hex: invalid byte: U+{ord(bad):04X} '{bad}'" if bad else None


# ---- responses --------------------------------------------------------------------------------------


def _time(ts: float) -> str:
    """Go's time.Time in JSON: RFC 3339 in UTC, the fraction without trailing zeros (to the microsecond, as
    far as a float of seconds is exact)."""
    seconds, micros = divmod(round(ts * 1e6), 10**6)
    fraction = f".{micros:06d}".rstrip("0") if micros else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + fraction + "Z"


def _hash(row: dict[str, Any]) -> str:
    """Consul's Intention.SetHash (BLAKE2b-256 of the content fields), which legacy intentions carry."""
    h = hashlib.blake2b(digest_size=32)
    for k in ("ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName", "SourceType",
              "Action"):
        h.update(row[k].encode())
    h.update(struct.pack("<Q", row["Precedence"]))
    for k in sorted(row["Meta"]):
        h.update(k.encode())
        h.update(row["Meta"][k].encode())
    return base64.b64encode(h.digest()).decode()


def intention_json(row: dict[str, Any]) -> dict[str, Any]:
    """Consul's Intention. Every field a ``?filter`` may name is present, empty or not (go-bexpr sees the
    whole struct); the times and Hash only on legacy intentions, Permissions only on L7 ones."""
    out: dict[str, Any] = {}
    if row["CreatedAt"] is not None:
        out["CreatedAt"], out["UpdatedAt"] = _time(row["CreatedAt"]), _time(row["UpdatedAt"])
    out.update((k, row[k]) for k in ("ID", "Description", "SourceNS", "SourceName", "DestinationNS",
                                     "DestinationName", "SourceType", "Action"))
    if row["Permissions"]:
        out["Permissions"] = row["Permissions"]
    out["Meta"], out["Precedence"] = row["Meta"], row["Precedence"]
    if row["ID"]:
        out["Hash"] = _hash(row)
    out["CreateIndex"], out["ModifyIndex"] = row["CreateIndex"], row["ModifyIndex"]
    return out


def _state(request: web.Request) -> StateStore:
    state: StateStore = server_of(request).store
    return state


def _look(request: web.Request, fn: Callable[[IntentionTable], Any]) -> Any:
    """A check against the current state before proposing a write, refused as the write itself would be."""
    state = _state(request)
    with state.lock:
        return fn(state.intentions)


async def _propose(request: web.Request, cmd: Command) -> None:
    await server_of(request).apply(cmd)


# ---- routes (the fixed paths before /{id}: the first matching resource answers) -----------------------


@routes.get("/v1/connect/intentions")
async def listing(request: web.Request) -> web.Response:
    table = _state(request).intentions
    return await blocking(request, lambda: (table.index, [intention_json(r) for r in table.all()]), topics=[TOPIC])


@routes.post("/v1/connect/intentions")
async def create(request: web.Request) -> web.Response:
    """The legacy create: a new ID; refused for a pair that already has an intention."""
    try:
        ixn = _decode(await read_json(request))
    except DecodeFailed as e:
        raise Failed("Failed to decode request body: " + e.detail) from None
    _refuse_tenancy(ixn)
    _refuse_elsewhere(ixn)
    if ixn["ID"]:
        raise Failed("ID must be empty when creating a new intention")
    _legacy_problems(ixn)
    # Made here, by the proposer, so that every server applies the same ID.
    ixn["ID"] = str(uuid.uuid4())
    await _propose(request, IntentionSet(mode="create", intention=_row(ixn)))
    return json_response(request, {"ID": ixn["ID"]})


@routes.get("/v1/connect/intentions/match")
async def match(request: web.Request) -> web.Response:
    """The intentions that apply to each ``name`` as a source or a destination, in evaluation order."""
    by = request.query.getall("by", [])
    if len(by) != 1:
        raise Failed("required query parameter 'by' not set")
    if by[0] not in ("source", "destination"):
        raise Failed("'by' parameter must be one of 'source' or 'destination'")
    names = request.query.getall("name", [])
    if not names:
        raise Failed("required query parameter 'name' not set")
    wanted = {name: _name("name", "", name) for name in names}
    table = _state(request).intentions

    def compute() -> tuple[int, Any]:
        return table.index, {k: [intention_json(r) for r in table.match(by[0], v)] for k, v in wanted.items()}

    return await blocking(request, compute, topics=[TOPIC])


@routes.get("/v1/connect/intentions/check")
async def check(request: web.Request) -> web.Response:
    """Would ``source`` be allowed to connect to ``destination``? L7 intentions count as deny, as in Consul."""
    source_type = request.query.get("source-type") or "consul"
    source, destination = _pair(request)
    if source_type != "consul":
        raise Failed(f"unsupported SourceType: {_q(source_type)}")
    table = _state(request).intentions
    cfg = agent_of(request).cfg
    default = default_for(cfg.intentions_default, cfg.dev)

    def compute() -> tuple[int, Any]:
        return table.index, {"Allowed": decide(table.match("destination", destination), source, default).allowed}

    return await blocking(request, compute, topics=[TOPIC])


@routes.get("/v1/connect/intentions/exact")
async def read_exact(request: web.Request) -> web.Response:
    source, destination = _pair(request)
    table = _state(request).intentions

    def compute() -> tuple[int, Any]:
        row = table.exact(source, destination)
        if row is None:
            raise NotFound(NOT_FOUND)
        return table.index, intention_json(row)

    return await blocking(request, compute, topics=[TOPIC])


@routes.put("/v1/connect/intentions/exact")
async def upsert(request: web.Request) -> web.Response:
    """Create or replace the intention of a (source, destination) pair; the names come from the URL."""
    source, destination = _pair(request, allow_empty=False)
    ixn = _decode(await read_json(request))
    _refuse_elsewhere(ixn)
    ixn.update(ID="", SourceName=source, DestinationName=destination)
    if ixn["Meta"]:
        # Consul keeps Meta on the destination's config entry, which this endpoint cannot write.
        held = _look(request, lambda t: bool(t.by_destination.get(destination)))
        raise Failed("Meta must not be specified, or should be unchanged during an update." if held
                        else "Meta must not be specified")
    problem = _upsert_problem(ixn, _look(request, lambda t: t.position(source, destination)))
    if problem:
        raise Failed(problem)
    await _propose(request, IntentionSet(mode="upsert", intention=_row(ixn)))
    return json_response(request, True)


@routes.delete("/v1/connect/intentions/exact")
async def delete_exact(request: web.Request) -> web.Response:
    source, destination = _pair(request, allow_empty=False)
    await _propose(request, IntentionDelete(source=source, destination=destination))
    return json_response(request, True)


@routes.get("/v1/connect/intentions/{id}")
async def read(request: web.Request) -> web.Response:
    intention_id = request.match_info["id"]
    problem = uuid_problem(intention_id)
    if problem:
        raise Invalid(f"failed config entry lookup: {problem}")
    table = _state(request).intentions

    def compute() -> tuple[int, Any]:
        row = table.get(intention_id)
        if row is None:
            raise NotFound(NOT_FOUND)
        return table.index, intention_json(row)

    return await blocking(request, compute, topics=[TOPIC])


def _lookup_problem(intention_id: str) -> None:
    problem = uuid_problem(intention_id)
    if problem:
        raise Failed(f"Intention lookup failed: failed config entry lookup: {problem}")


@routes.put("/v1/connect/intentions/{id}")
async def update(request: web.Request) -> web.Response:
    """The legacy update by ID: everything but the destination may change."""
    intention_id = request.match_info["id"]
    ixn = _decode(await read_json(request))
    _refuse_tenancy(ixn)
    _refuse_elsewhere(ixn)
    _lookup_problem(intention_id)
    _look(request, lambda t: t.updatable(intention_id, ixn["DestinationName"]))
    _legacy_problems(ixn)
    ixn["ID"] = intention_id  # the URL names the intention, whatever the body says
    await _propose(request, IntentionSet(mode="update", intention=_row(ixn)))
    return json_response(request, {"ID": intention_id})


@routes.delete("/v1/connect/intentions/{id}")
async def delete(request: web.Request) -> web.Response:
    intention_id = request.match_info["id"]
    _lookup_problem(intention_id)
    await _propose(request, IntentionDelete(id=intention_id))
    return json_response(request, True)
