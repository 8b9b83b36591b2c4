"""Consul's service and check definitions (``/v1/agent/service/register``, ``/v1/agent/check/register``):
decoded, validated, and turned into the rows the agent keeps and syncs to the catalog.

Field names match case-insensitively and in snake_case too, as Consul's agent endpoints accept.
"""

from __future__ import annotations

from typing import Any

from buoy.durations import format_duration
from buoy.http.decode import Fields
from buoy.http.errors import bad_request

SERVICE_FIELDS = {"ID", "Name", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Kind", "Weights",
                  "EnableTagOverride", "Check", "Checks", "Token", "Namespace", "Partition", "SocketPath",
                  "Proxy", "Connect", "Locality"}
CHECK_FIELDS = {"ID", "CheckID", "Name", "Notes", "Status", "ServiceID", "TTL", "Interval", "Timeout",
                "DeregisterCriticalServiceAfter", "SuccessBeforePassing", "FailuresBeforeCritical",
                "FailuresBeforeWarning", "Output", "Token", "Namespace", "Partition",
                # Kinds the agent does not run yet are refused by name below, not as unknown fields.
                "HTTP", "Method", "Header", "Body", "TLSSkipVerify", "TLSServerName", "TCP", "UDP", "GRPC",
                "GRPCUseTLS", "Args", "ScriptArgs", "AliasService", "AliasNode", "H2PING", "DockerContainerID",
                "Shell", "OSService", "DisableRedirects", "OutputMaxSize", "H2PingUseTLS"}
NOT_YET = ("UDP", "GRPC", "Args", "ScriptArgs", "AliasService", "AliasNode", "H2PING", "DockerContainerID",
           "OSService")
MIN_INTERVAL = 1.0
STATES = ("passing", "warning", "critical")


def _definition(f: Fields, what: str) -> tuple[str, dict[str, Any]]:
    """The check's kind and what its runner needs, validated."""
    for kind in NOT_YET:
        if f.has(kind):
            raise bad_request(f"{what}: {kind} checks are not supported by this agent yet (use TTL, HTTP or TCP)")
    kinds = [k for k in ("TTL", "HTTP", "TCP") if f.has(k)]
    if len(kinds) != 1:
        raise bad_request(f"{what}: a check needs exactly one of TTL, HTTP or TCP")
    if kinds == ["TTL"]:
        ttl = f.duration("TTL")
        if ttl is None or ttl <= 0:
            raise bad_request(f"{what}: TTL must be positive")
        return "ttl", {"TTL": format_duration(ttl)}
    interval = f.duration("Interval")
    if interval is None:
        raise bad_request(f"{what}: Interval is required for {kinds[0]} checks")
    if interval < MIN_INTERVAL:
        raise bad_request(f"{what}: Interval must be at least 1s")
    timeout = f.duration("Timeout")
    if timeout is not None and timeout <= 0:
        raise bad_request(f"{what}: Timeout must be positive")
    d: dict[str, Any] = {"Interval": format_duration(interval), "Timeout": format_duration(timeout) if timeout else "",
                         "SuccessBeforePassing": f.int("SuccessBeforePassing"),
                         "FailuresBeforeCritical": f.int("FailuresBeforeCritical")}
    if kinds == ["TCP"]:
        target = f.str("TCP")
        if ":" not in target or not target.rsplit(":", 1)[1].isdigit():
            raise bad_request(f"{what}: TCP must be host:port, not {target!r}")
        return "tcp", dict(d, TCP=target)
    url = f.str("HTTP")
    if not url.startswith(("http://", "https://")):
        raise bad_request(f"{what}: HTTP must be an http:// or https:// URL, not {url!r}")
    header = f.raw("Header", {})
    if not isinstance(header, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in header.values()):
        raise bad_request(f"{what}: Header must map names to lists of strings")
    return "http", dict(d, HTTP=url, Method=f.str("Method") or "GET", Header=header, Body=f.str("Body"),
                        TLSSkipVerify=f.bool("TLSSkipVerify"))


def parse_check(data: Any, what: str, service_id: str = "", default_id: str = "") -> dict[str, Any]:
    """A check row (Consul's HealthCheck shape) with the ``Definition`` its runner uses."""
    f = Fields(data, what, CHECK_FIELDS)
    kind, definition = _definition(f, what)
    name = f.str("Name")
    check_id = f.str("CheckID") or f.str("ID") or default_id or name
    if not check_id:
        raise bad_request(f"{what}: Missing check name")
    status = f.str("Status") or "critical"
    if status not in STATES:
        raise bad_request(f"{what}: Status must be passing, warning or critical, not {status!r}")
    return {
        "CheckID": check_id,
        "Name": name or check_id,
        "Status": status,
        "Notes": f.str("Notes"),
        "Output": f.str("Output"),
        "ServiceID": f.str("ServiceID") or service_id,
        "Type": kind,
        "Interval": definition.get("Interval", ""),
        "Timeout": definition.get("Timeout", ""),
        "ExposedPort": 0,
        "Definition": definition,
    }


def service_row(f: Fields, name: str) -> dict[str, Any]:
    """The AgentService fields shared by agent definitions and catalog registrations."""
    if not name:
        raise bad_request("Missing service name")
    port = f.int("Port")
    if not 0 <= port <= 65535:
        raise bad_request(f"Invalid service port {port}: must be between 0 and 65535")
    weights = Fields(f.obj("Weights"), "Service.Weights", {"Passing", "Warning"})
    return {
        "ID": f.str("ID") or name,
        "Service": name,
        "Tags": f.str_list("Tags"),
        "Address": f.str("Address"),
        "TaggedAddresses": f.raw("TaggedAddresses", {}),
        "Meta": f.str_map("Meta"),
        "Port": port,
        "Weights": {"Passing": weights.int("Passing", 1), "Warning": weights.int("Warning", 1)},
        "EnableTagOverride": f.bool("EnableTagOverride"),
        "Kind": f.str("Kind"),
    }


def parse_service(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An AgentService row and the checks the definition embeds (``Check`` and ``Checks``)."""
    f = Fields(data, "Service", SERVICE_FIELDS)
    svc = service_row(f, f.str("Name"))
    name = svc["Service"]
    raw_checks = f.checks()
    sid = svc["ID"]
    checks = []
    for i, raw in enumerate(raw_checks):
        # Consul names embedded checks service:<id>, or service:<id>:<n> when there are several.
        default = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i + 1}"
        check = parse_check(raw, f"Service.Checks[{i}]", sid, default)
        if check["ServiceID"] != sid:
            raise bad_request(f"Service.Checks[{i}]: ServiceID must be {sid!r}")
        if not check["Name"] or check["Name"] == default:
            check["Name"] = f"Service '{name}' check"
        checks.append(check)
    return svc, checks
