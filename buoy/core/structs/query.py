"""Consul's ``PreparedQuery`` (agent/structs/prepared_query.go): its fields, the decoding of a /v1/query body,
the validation of a write, the ``name_prefix_match`` templates that turn one stored query into the query a
name asks for, the filters an execute applies to each instance, the explain and execute responses, and an
execute response as its readers take it.

A query is a ``dict`` keyed by Consul's field names, which are also its JSON names; every field is present.
Every message here is Consul's, word for word: clients and the integration tests compare them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed, Invalid
from buoy.durations import parse_duration

Query = dict[str, Any]

QUERY_FIELDS = {"ID", "Name", "Session", "Token", "Service", "DNS", "Template", "CreateIndex", "ModifyIndex"}
SERVICE_FIELDS = {"Service", "Failover", "OnlyPassing", "IgnoreCheckIDs", "Near", "Tags", "NodeMeta", "ServiceMeta",
                  "Connect"}
FAILOVER_FIELDS = {"NearestN", "Datacenters", "Targets"}
TARGET_FIELDS = {"Peer", "PeerName", "Datacenter", "Namespace", "Partition"}
TEMPLATE_FIELDS = {"Type", "Regexp", "RemoveEmptyTags"}
REDACTED_TOKEN = "<hidden>"
TEMPLATE_TYPE = "name_prefix_match"
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_EXPRESSION = re.compile(r"\s*(?:(name\.full|name\.prefix|name\.suffix|agent\.segment)|match\(\s*(\d+)\s*\))\s*$")
_MAPS = (".NodeMeta", ".ServiceMeta")  # walked as maps: values are interpolated, keys are not


class QueryError(Exception):
    """A template that does not compile or render, or a template asked for by ID; the text is Consul's."""


# ---- decoding -----------------------------------------------------------------------------------------


def _str_list(f: Fields, name: str) -> list[str] | None:
    return f.str_list(name) if f.has(name) else None  # Consul keeps an absent list as null


def decode(body: Any) -> Query:
    """A prepared query as stored and listed, from a request body; unknown fields are refused."""
    f = Fields(body, "Query", QUERY_FIELDS)
    svc = Fields(f.obj("Service"), "Query.Service", SERVICE_FIELDS)
    failover = Fields(svc.obj("Failover"), "Query.Service.Failover", FAILOVER_FIELDS)
    template = Fields(f.obj("Template"), "Query.Template", TEMPLATE_FIELDS)
    raw_targets = failover.raw("Targets")
    if raw_targets is not None and not isinstance(raw_targets, list):
        raise DecodeFailed("Query.Service.Failover.Targets: expected a list")
    targets = []
    for i, item in enumerate(raw_targets or ()):
        t = Fields(item, f"Query.Service.Failover.Targets[{i}]", TARGET_FIELDS)
        targets.append({"Peer": t.str("Peer") or t.str("PeerName"), "Datacenter": t.str("Datacenter")})
    return {
        "ID": f.str("ID"),
        "Name": f.str("Name"),
        "Session": f.str("Session"),
        "Token": f.str("Token"),
        "Template": {"Type": template.str("Type"), "Regexp": template.str("Regexp"),
                     "RemoveEmptyTags": template.bool("RemoveEmptyTags")},
        "Service": {
            "Service": svc.str("Service"),
            "Failover": {"NearestN": failover.int("NearestN"), "Datacenters": _str_list(failover, "Datacenters"),
                         "Targets": targets if raw_targets is not None else None},
            "OnlyPassing": svc.bool("OnlyPassing"),
            "IgnoreCheckIDs": _str_list(svc, "IgnoreCheckIDs"),
            "Near": svc.str("Near"),
            "Tags": _str_list(svc, "Tags"),
            "NodeMeta": svc.str_map("NodeMeta") if svc.has("NodeMeta") else None,
            "ServiceMeta": svc.str_map("ServiceMeta") if svc.has("ServiceMeta") else None,
            "Connect": svc.bool("Connect"),
        },
        "DNS": {"TTL": Fields(f.obj("DNS"), "Query.DNS", {"TTL"}).str("TTL")},
    }


# ---- validation ---------------------------------------------------------------------------------------


def validate(query: Query) -> None:
    """Consul's parseQuery, which the endpoint runs before it proposes a write. Name, session and template
    integrity are the table's, checked when the write applies, against the state at that moment."""
    problem = _problem(query)
    if problem:
        raise Failed(f"Invalid prepared query: {problem}")


def _problem(query: Query) -> str | None:
    svc, failover, ttl = query["Service"], query["Service"]["Failover"], query["DNS"]["TTL"]
    if not (query["Name"] or is_template(query) or query["Session"]):
        return "Must be bound to a session"
    if query["Token"] == REDACTED_TOKEN:
        return f"Bad Token '{REDACTED_TOKEN}', it looks like a query definition with a redacted token was submitted"
    if not svc["Service"]:
        return "Must provide a Service name to query"
    if failover["NearestN"] < 0:
        return f"Bad NearestN '{failover['NearestN']}', must be >= 0"
    if (failover["NearestN"] or failover["Datacenters"]) and failover["Targets"]:
        return "Targets cannot be populated with NearestN or Datacenters"
    if ttl:
        # Go's time.ParseDuration: a unit is required except for a plain 0.
        if re.fullmatch(r"[-+]?[0-9.]+", ttl) and ttl.lstrip("+-") != "0":
            return f"Bad DNS TTL '{ttl}': time: missing unit in duration \"{ttl}\""
        try:
            seconds = parse_duration(ttl)
        except ValueError:
            return f"Bad DNS TTL '{ttl}': time: invalid duration \"{ttl}\""
        if seconds < 0:
            return f"DNS TTL '{round(seconds * 1e9)}', must be >=0"
    return None


# ---- templates ----------------------------------------------------------------------------------------


def is_template(query: Query) -> bool:
    return bool(query["Template"]["Type"])


def compile_template(query: Query) -> None:
    """Refuse a template that could not render, as Consul's compile step does: an unknown type, a bad
    regular expression, or a ``${...}`` it cannot evaluate (checked by rendering the template's own name)."""
    if query["Template"]["Type"] != TEMPLATE_TYPE:
        raise QueryError(f"Bad Template.Type '{query['Template']['Type']}'")
    render(query, query["Name"])


def render(query: Query, name: str) -> Query:
    """The template ``query`` filled in for ``name``: every string in its Service interpolated."""
    template = query["Template"]
    groups: list[str] = []
    if template["Regexp"]:
        try:
            found = re.search(template["Regexp"], name)
        except re.error as e:
            raise QueryError(f"Bad Regexp: {e}") from None
        if found:
            groups = [g or "" for g in (found.group(0), *found.groups())]
    prefix = query["Name"]
    variables = {
        "name.full": name,
        "name.prefix": prefix,
        # Consul trims the prefix case-sensitively even though the lookup that chose the template is not.
        "name.suffix": name[len(prefix):] if name.startswith(prefix) else name,
        "agent.segment": "",  # network segments are an Enterprise feature
    }

    def interpolate(path: str, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            expr = _EXPRESSION.match(m.group(1))
            if expr is None:
                raise QueryError(f"Bad evaluation for '{text}' in Service{path}: "
                                 f"unknown variable accessed: {m.group(1).strip()}")
            if expr.group(1):
                return variables[expr.group(1)]
            n = int(expr.group(2))
            return groups[n] if n < len(groups) else ""  # Consul's match() never fails: "" when out of range

        if "${" in _INTERPOLATION.sub("", text):
            raise QueryError(f"Bad format '{text}' in Service{path}: unterminated interpolation")
        return _INTERPOLATION.sub(one, text)

    service = _walk(query["Service"], "", interpolate)
    if template["RemoveEmptyTags"]:
        service["Tags"] = [t for t in service["Tags"] or () if t]
    return dict(query, Service=service)


def _walk(value: Any, path: str, fn: Callable[[str, str], str]) -> Any:
    """A copy of ``value`` with ``fn`` applied to every string in it, each named by its path."""
    if isinstance(value, str):
        return fn(path, value)
    if isinstance(value, list):
        return [_walk(v, f"{path}[{i}]", fn) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _walk(v, f"{path}[{k}]" if path in _MAPS else f"{path}.{k}", fn) for k, v in value.items()}
    return value


# ---- execution ----------------------------------------------------------------------------------------


def service_name(query: Query) -> str:
    """The service an execute of ``query`` (rendered, if it is a template) looks up."""
    name: str = query["Service"]["Service"]
    return name


def refuse_connect(query: Query, asked: bool) -> None:
    """Executes here never look up Connect-capable instances, so a Connect lookup (asked for by ``?connect``
    or by the query) gets the answer Consul gives when Connect is disabled."""
    if asked or query["Service"]["Connect"]:
        raise Invalid("Connect must be enabled in order to use this endpoint")


def selects(query: Query, node: dict[str, Any], instance: dict[str, Any], checks: list[dict[str, Any]]) -> bool:
    """Consul's prepared-query filters: health (critical never, warning unless OnlyPassing, ignored check IDs
    skipped), then node meta, service meta and tags (all required, ``!tag`` forbidden, case-insensitive)."""
    svc = query["Service"]
    ignored = set(svc["IgnoreCheckIDs"] or ())
    for check in checks:
        # A maintenance check is what Consul stores as a critical one.
        failing = check["Status"] in ("critical", "maintenance") or (
            svc["OnlyPassing"] and check["Status"] != "passing")
        if failing and check["CheckID"] not in ignored:
            return False
    if any(node["Meta"].get(k) != v for k, v in (svc["NodeMeta"] or {}).items()):
        return False
    if any(instance["Meta"].get(k) != v for k, v in (svc["ServiceMeta"] or {}).items()):
        return False
    have = {t.lower() for t in instance["Tags"]}
    for tag in svc["Tags"] or ():
        tag = tag.lower()
        if (tag[1:] in have) if tag.startswith("!") else (tag not in have):
            return False
    return True


def explain_response(query: Query) -> dict[str, Any]:
    """Consul's PreparedQueryExplainResponse: the query an execute would run, rendered if a template."""
    return {"Query": query}


def execute_response(query: Query, nodes: list[dict[str, Any]], datacenter: str) -> dict[str, Any]:
    """Consul's PreparedQueryExecuteResponse; with one datacenter there is never a failover."""
    return {"Service": service_name(query), "Nodes": nodes, "DNS": query["DNS"], "Datacenter": datacenter,
            "Failovers": 0}


class ExecuteAnswer(NamedTuple):
    service: str
    nodes: list[dict[str, Any]] | None  # health entries, as /v1/health/service lists them
    dns_ttl: str  # "" when the query sets none


def read_execute_response(body: Any) -> ExecuteAnswer:
    """An execute response as DNS reads it from the API; an empty answer reads as one without nodes."""
    result = body or {}
    return ExecuteAnswer(result.get("Service", ""), result.get("Nodes"), (result.get("DNS") or {}).get("TTL") or "")
