"""Consul's ``Intention`` (agent/structs/intention.go): its fields, the decoding of a request body, the
validation of the legacy and the by-name writes, precedence and evaluation order, the hash legacy
intentions carry, the API encoding and ``String()``.

An intention is a ``dict`` keyed by Consul's field names, which are also its JSON names. Every message
here is Consul's, word for word: clients and the integration tests compare them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
import struct
import time
from typing import Any

from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed, Invalid
from buoy.core.spiffe import WILDCARD

Intention = dict[str, Any]

ACTIONS = ("allow", "deny")
# Consul's limits on opaque values (metaValueMaxLength, metaMaxKeyPairs, metaKeyMaxLength).
MAX_VALUE, MAX_PAIRS, MAX_KEY = 512, 64, 128
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})
HEADER_MATCHES = ("Present", "Exact", "Prefix", "Suffix", "Regex")
PATHS = ("PathExact", "PathPrefix", "PathRegex")
_HEX = frozenset(string.hexdigits)

# The string fields a request body may set (the server ignores the rest of what it sends back).
BODY_STRINGS = ("ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName",
                "SourcePartition", "DestinationPartition", "SourcePeer", "SourceSamenessGroup", "SourceType",
                "Action")
# What a write hands the state machine; the table adds namespaces, precedence, times and indexes.
WRITTEN = ("ID", "Description", "SourceName", "DestinationName", "SourceType", "Action", "Permissions", "Meta")
# The content fields, in the order Consul's SetHash feeds them and its JSON shows them.
CONTENT = ("ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName", "SourceType",
           "Action")


def _q(text: str) -> str:
    """Go's %q, near enough: a double-quoted string."""
    return json.dumps(text, ensure_ascii=False)


# ---- decoding -----------------------------------------------------------------------------------------


def decode(body: Any) -> Intention:
    """An Intention from a request body, every field typed; unknown fields are ignored, as Consul's decoder
    ignores them. Precedence, times, Hash and indexes are the server's and are ignored too."""
    f = Fields(body, "Intention")
    ixn: Intention = {k: f.str(k) for k in BODY_STRINGS}
    ixn["Meta"] = f.str_map("Meta")
    ixn["Permissions"] = _permissions(f.raw("Permissions"))
    ixn["SourceType"] = ixn["SourceType"] or "consul"
    return ixn


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
            http: dict[str, Any] = {k: h.str(k) for k in PATHS if h.str(k)}
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


def written(ixn: Intention) -> Intention:
    """What the state machine keeps of a checked intention."""
    return {k: ixn[k] for k in WRITTEN}


def service_name(param: str, side: str, value: str) -> str:
    """The service name in ``name``, ``namespace/name`` or ``partition/namespace/name`` (a query parameter
    ``param`` naming the ``side`` "Source" or "Destination"); CE takes only the default tenancy."""
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


def require_consul_source(source_type: str) -> None:
    if source_type != "consul":
        raise Failed(f"unsupported SourceType: {_q(source_type)}")


# ---- validation ---------------------------------------------------------------------------------------


def refuse_tenancy(ixn: Intention) -> None:
    """The legacy endpoints' checks of partitions and namespaces in the body, made before any other."""
    for side in ("Destination", "Source"):
        if ixn[f"{side}Partition"].lower() not in ("", "default"):
            raise Invalid(f"Cannot specify a {side.lower()} partition with this endpoint")
    for name in ("SourceNS", "DestinationNS"):
        if ixn[name].lower() not in ("", "default"):
            raise Invalid(f"Invalid {name}({ixn[name]}): Namespaces is a Consul Enterprise feature")


def refuse_elsewhere(ixn: Intention) -> None:
    """Sources the intention endpoints cannot take (Consul: config entries only)."""
    for name in ("SourcePeer", "SourceSamenessGroup"):
        if ixn[name]:
            raise Failed(f"{name} field is not supported on this endpoint. Use config entries instead")


def _partial_wildcard(name: str) -> bool:
    return name != WILDCARD and WILDCARD in name


def validate_legacy(ixn: Intention) -> None:
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


def validate_upsert(ixn: Intention, position: int, destination_held: bool) -> None:
    """Consul's validation of a write by name, which it makes as ``Sources[position]`` of the destination's
    service-intentions entry (``destination_held``: that entry exists already)."""
    if ixn["Meta"]:
        # Consul keeps Meta on the destination's config entry, which this endpoint cannot write.
        raise Failed("Meta must not be specified, or should be unchanged during an update." if destination_held
                     else "Meta must not be specified")
    problem = _upsert_problem(ixn, f"Sources[{position}]")
    if problem:
        raise Failed(problem)


def _upsert_problem(ixn: Intention, src: str) -> str | None:
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
    for key in PATHS[:2]:
        if key in http and not http[key].startswith("/"):
            return f"{where}.HTTP.{key} doesn't start with '/': {_q(http[key])}"
    paths = sum(1 for k in PATHS if k in http)
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


# ---- precedence ---------------------------------------------------------------------------------------


def precedence(source: str, destination: str) -> int:
    """Consul's precedence: exact beats ``*`` on the destination first, then on the source (9, 8, 6, 5)."""
    top = 6 if destination == WILDCARD else 9
    return top - (1 if source == WILDCARD else 0)


def evaluation_order(row: Intention) -> tuple[Any, ...]:
    """Consul's IntentionPrecedenceSorter: highest precedence first, then the names, for a stable order."""
    return (-row["Precedence"], row["SourceNS"], row["SourceName"], row["DestinationNS"], row["DestinationName"])


# ---- encoding -----------------------------------------------------------------------------------------


def _time(ts: float) -> str:
    """Go's time.Time in JSON: RFC 3339 in UTC, the fraction without trailing zeros (to the microsecond, as
    far as a float of seconds is exact)."""
    seconds, micros = divmod(round(ts * 1e6), 10**6)
    fraction = f".{micros:06d}".rstrip("0") if micros else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + fraction + "Z"


def content_hash(row: Intention) -> str:
    """Consul's Intention.SetHash (BLAKE2b-256 of the content fields), which legacy intentions carry."""
    h = hashlib.blake2b(digest_size=32)
    for k in CONTENT:
        h.update(row[k].encode())
    h.update(struct.pack("<Q", row["Precedence"]))
    for k in sorted(row["Meta"]):
        h.update(k.encode())
        h.update(row["Meta"][k].encode())
    return base64.b64encode(h.digest()).decode()


def to_api(row: Intention) -> dict[str, Any]:
    """Consul's Intention in JSON. Every field a ``?filter`` may name is present, empty or not (go-bexpr sees
    the whole struct); the times and Hash only on legacy intentions, Permissions only on L7 ones."""
    out: dict[str, Any] = {}
    if row["CreatedAt"] is not None:
        out["CreatedAt"], out["UpdatedAt"] = _time(row["CreatedAt"]), _time(row["UpdatedAt"])
    out.update((k, row[k]) for k in CONTENT)
    if row["Permissions"]:
        out["Permissions"] = row["Permissions"]
    out["Meta"], out["Precedence"] = row["Meta"], row["Precedence"]
    if row["ID"]:
        out["Hash"] = content_hash(row)
    out["CreateIndex"], out["ModifyIndex"] = row["CreateIndex"], row["ModifyIndex"]
    return out


def describe(ixn: Intention) -> str:
    """Consul's Intention.String(), which its authorize reasons quote."""
    ident = f"ID: {ixn['ID']}, " if ixn.get("ID") else ""
    perms = ixn.get("Permissions") or []
    detail = f"Permissions: {len(perms)}" if perms else f"Action: {str(ixn.get('Action', '')).upper()}"
    return (f"{ixn['SourceNS']}/{ixn['SourceName']} => {ixn['DestinationNS']}/{ixn['DestinationName']} "
            f"({ident}Precedence: {ixn['Precedence']}, {detail})")
