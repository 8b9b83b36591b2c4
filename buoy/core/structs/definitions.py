"""Consul's service and check definitions (``/v1/agent/service/register``, ``/v1/agent/check/register``):
decoded, validated, and turned into the rows the agent keeps and syncs to the catalog.

Field names match case-insensitively and in snake_case too, as Consul's agent endpoints accept.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed, Invalid
from buoy.durations import format_duration

SERVICE_FIELDS = {"ID", "Name", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Kind", "Weights",
                  "EnableTagOverride", "Check", "Checks", "Token", "Namespace", "Partition", "SocketPath",
                  "Proxy", "Connect", "Locality"}
CHECK_FIELDS = {"ID", "CheckID", "Name", "Notes", "Status", "ServiceID", "TTL", "Interval", "Timeout",
                "DeregisterCriticalServiceAfter", "SuccessBeforePassing", "FailuresBeforeCritical",
                "FailuresBeforeWarning", "Output", "Token", "Namespace", "Partition",
                # Kinds the agent does not run are refused by name below, not as unknown fields.
                "HTTP", "Method", "Header", "Body", "TLSSkipVerify", "TLSServerName", "TCP", "UDP", "GRPC",
                "GRPCUseTLS", "Args", "ScriptArgs", "AliasService", "AliasNode", "H2PING", "DockerContainerID",
                "Shell", "OSService", "DisableRedirects", "OutputMaxSize", "H2PingUseTLS"}
# The field that names each kind of check; AliasNode alone aliases a whole node.
KIND_FIELDS = {"TTL": "ttl", "HTTP": "http", "TCP": "tcp", "UDP": "udp", "GRPC": "grpc", "H2PING": "h2ping",
               "Args": "script", "ScriptArgs": "script", "AliasService": "alias", "AliasNode": "alias"}
KIND_NAMES = "TTL, HTTP, TCP, UDP, GRPC, H2PING, Args or AliasService"
NOT_SUPPORTED = ("DockerContainerID", "OSService")
SCRIPTS_DISABLED = ("Scripts are disabled on this agent; to enable them, set enable_script_checks "
                    "(or enable_local_script_checks for checks in config files)")
MIN_INTERVAL = 1.0
MIN_DEREGISTER_AFTER = 1.0  # Consul's minimum is 1m; Buoy takes any value from 1s (docs/configuration.md)
STATES = ("passing", "warning", "critical")


def _host_port(what: str, field: str, target: str) -> None:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise Invalid(f"{what}: {field} must be host:port, not {target!r}")


def _kind(f: Fields, what: str) -> tuple[str, str]:
    """The check's kind and the field that names it."""
    for field in NOT_SUPPORTED:
        if f.has(field):
            raise Invalid(f"{what}: {field} checks are not supported by this agent")
    named = [field for field in KIND_FIELDS if f.has(field)]
    kinds = {KIND_FIELDS[field] for field in named}
    if len(kinds) != 1 or named == ["Args", "ScriptArgs"]:
        got = f", not {' and '.join(named)}" if named else ""
        raise Invalid(f"{what}: a check needs exactly one of {KIND_NAMES}{got}")
    return kinds.pop(), named[0]


def _probe_fields(f: Fields, what: str, field: str) -> dict[str, Any]:
    """Interval, timeout and thresholds, which every kind that probes on an interval shares."""
    interval = f.duration("Interval")
    if interval is None:
        raise Invalid(f"{what}: Interval is required for {field} checks")
    if interval < MIN_INTERVAL:
        raise Invalid(f"{what}: Interval must be at least 1s")
    timeout = f.duration("Timeout")
    if timeout is not None and timeout <= 0:
        raise Invalid(f"{what}: Timeout must be positive")
    counts = {k: f.int(k) for k in ("SuccessBeforePassing", "FailuresBeforeCritical", "OutputMaxSize")}
    # Consul: FailuresBeforeWarning defaults to FailuresBeforeCritical and may not exceed it.
    counts["FailuresBeforeWarning"] = f.int("FailuresBeforeWarning", counts["FailuresBeforeCritical"])
    for k, v in counts.items():
        if v < 0:
            raise Invalid(f"{what}: {k} must not be negative")
    if counts["FailuresBeforeWarning"] > counts["FailuresBeforeCritical"]:
        raise Invalid(f"{what}: FailuresBeforeWarning must not be greater than FailuresBeforeCritical")
    return {"Interval": format_duration(interval), "Timeout": format_duration(timeout) if timeout else "", **counts}


def _definition(f: Fields, what: str, scripts: bool) -> tuple[str, dict[str, Any]]:
    """The check's kind and what its runner needs, validated."""
    kind, field = _kind(f, what)
    if kind == "ttl":
        ttl = f.duration("TTL")
        if ttl is None or ttl <= 0:
            raise Invalid(f"{what}: TTL must be positive")
        return kind, {"TTL": format_duration(ttl)}
    if kind == "alias":
        alias = {"AliasService": f.str("AliasService"), "AliasNode": f.str("AliasNode")}
        if not any(alias.values()):
            raise Invalid(f"{what}: AliasService or AliasNode must name what the check aliases")
        return kind, alias
    if kind == "script" and not scripts:
        raise Invalid(f"{what}: {SCRIPTS_DISABLED}")
    d = _probe_fields(f, what, field)
    if kind == "script":
        args = f.str_list(field)
        if not args or not args[0]:
            raise Invalid(f"{what}: {field} must name a program to run")
        return kind, dict(d, Args=args)
    if kind == "http":
        url = f.str("HTTP")
        if not url.startswith(("http://", "https://")):
            raise Invalid(f"{what}: HTTP must be an http:// or https:// URL, not {url!r}")
        header = f.raw("Header", {})
        if not isinstance(header, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in header.values()):
            raise Invalid(f"{what}: Header must map names to lists of strings")
        return kind, dict(d, HTTP=url, Method=f.str("Method") or "GET", Header=header, Body=f.str("Body"),
                          TLSSkipVerify=f.bool("TLSSkipVerify"))
    target = f.str(field)
    _host_port(what, field, target.partition("/")[0] if kind == "grpc" else target)
    d[field] = target
    if kind == "grpc":
        if f.bool("GRPCUseTLS") and f.bool("TLSSkipVerify"):
            raise Invalid(f"{what}: TLSSkipVerify is not supported for gRPC checks by this agent")
        d.update(GRPCUseTLS=f.bool("GRPCUseTLS"), TLSServerName=f.str("TLSServerName"))
    elif kind == "h2ping":
        d.update(H2PingUseTLS=f.bool("H2PingUseTLS", True), TLSSkipVerify=f.bool("TLSSkipVerify"),
                 TLSServerName=f.str("TLSServerName"))
    return kind, d


def parse_check(data: Any, what: str, service_id: str = "", default_id: str = "",
                scripts: bool = False) -> dict[str, Any]:
    """A check row (Consul's HealthCheck shape) with the ``Definition`` its runner uses.

    ``scripts`` allows script checks: ``enable_script_checks`` for HTTP API registrations, that or
    ``enable_local_script_checks`` for config files.
    """
    f = Fields(data, what, CHECK_FIELDS)
    kind, definition = _definition(f, what, scripts)
    reap_after = f.duration("DeregisterCriticalServiceAfter")
    if reap_after is not None:
        if reap_after < MIN_DEREGISTER_AFTER:
            raise Invalid(f"{what}: DeregisterCriticalServiceAfter must be at least 1s")
        definition["DeregisterCriticalServiceAfter"] = format_duration(reap_after)
    name = f.str("Name")
    check_id = f.str("CheckID") or f.str("ID") or default_id or name
    if not check_id:
        raise Invalid(f"{what}: Missing check name")
    # Consul: a new check is critical until its first result, unless the definition says otherwise.
    status = f.str("Status") or "critical"
    if status not in STATES:
        raise Invalid(f"{what}: Status must be passing, warning or critical, not {status!r}")
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
        raise Invalid("Missing service name")
    port = f.int("Port")
    if not 0 <= port <= 65535:
        raise Invalid(f"Invalid service port {port}: must be between 0 and 65535")
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


PROXY_FIELDS = {"DestinationServiceName", "DestinationServiceID", "LocalServiceAddress", "LocalServicePort", "Mode",
                "Config", "Upstreams", "MeshGateway", "Expose"}
UPSTREAM_FIELDS = {"DestinationType", "DestinationName", "Datacenter", "LocalBindAddress", "LocalBindPort", "Config",
                   "MeshGateway"}
CONNECT_PROXY = "connect-proxy"
SIDECAR_SUFFIX = "-sidecar-proxy"
SIDECAR_PORTS = range(21000, 21256)  # Consul's default sidecar_min_port..sidecar_max_port
SIDECAR = "Service.Connect.SidecarService"
ServiceDef = tuple[dict[str, Any], list[dict[str, Any]]]


def _port(value: int, what: str) -> int:
    if not 0 <= value <= 65535:
        raise Invalid(f"{what}: invalid port {value}: must be between 0 and 65535")
    return value


def _upstream(data: Any, what: str) -> dict[str, Any]:
    f = Fields(data, what, UPSTREAM_FIELDS)
    kind = f.str("DestinationType") or "service"
    if kind not in ("service", "prepared_query"):
        raise Invalid(f"{what}: DestinationType must be service or prepared_query, not {kind!r}")
    if not f.str("DestinationName"):
        raise Invalid(f"{what}: Upstream destination name cannot be empty")
    row = {"DestinationType": kind, "DestinationName": f.str("DestinationName"),
           "LocalBindPort": _port(f.int("LocalBindPort"), f"{what}.LocalBindPort"), "MeshGateway": {}}
    # Consul leaves these out of its JSON when unset.
    optional = {"Datacenter": f.str("Datacenter"), "LocalBindAddress": f.str("LocalBindAddress"),
                "Config": f.obj("Config")}
    return row | {k: v for k, v in optional.items() if v}


def parse_proxy(data: Any, what: str) -> dict[str, Any]:
    """A connect-proxy's ``Proxy`` block in the shape Consul returns it."""
    f = Fields(data, what, PROXY_FIELDS)
    upstreams = f.raw("Upstreams", [])
    if not isinstance(upstreams, list):
        raise DecodeFailed(f"{what}.Upstreams: expected a list")
    mode = f.str("Mode")
    if mode not in ("", "direct", "transparent"):
        raise Invalid(f"{what}: Mode must be direct or transparent, not {mode!r}")
    return {
        "DestinationServiceName": f.str("DestinationServiceName"),
        "DestinationServiceID": f.str("DestinationServiceID"),
        "LocalServiceAddress": f.str("LocalServiceAddress"),
        "LocalServicePort": _port(f.int("LocalServicePort"), f"{what}.LocalServicePort"),
        "Mode": mode,
        "Config": f.obj("Config") or {},
        "Upstreams": [_upstream(u, f"{what}.Upstreams[{i}]") for i, u in enumerate(upstreams)],
        "MeshGateway": f.obj("MeshGateway") or {},
        "Expose": f.obj("Expose") or {},
    }


def _embedded_checks(f: Fields, svc: dict[str, Any], scripts: bool) -> list[dict[str, Any]]:
    raw_checks = f.checks()
    sid = svc["ID"]
    checks = []
    for i, raw in enumerate(raw_checks):
        # Consul names embedded checks service:<id>, or service:<id>:<n> when there are several.
        default = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i + 1}"
        check = parse_check(raw, f"{f.what}.Checks[{i}]", sid, default, scripts)
        if check["ServiceID"] != sid:
            raise Invalid(f"{f.what}.Checks[{i}]: ServiceID must be {sid!r}")
        if not check["Name"] or check["Name"] == default:
            check["Name"] = f"Service '{svc['Service']}' check"
        checks.append(check)
    return checks


def _check_proxy(svc: dict[str, Any], what: str) -> None:
    """Consul's rules for a connect-proxy registration."""
    if not svc["Proxy"]["DestinationServiceName"]:
        raise Invalid(f"{what}: Proxy.DestinationServiceName must be non-empty for Connect proxy services")
    if not svc["Port"]:
        raise Invalid(f"{what}: Port must be non-zero for a Connect proxy service")


def _sidecar(parent: dict[str, Any], data: Any, scripts: bool) -> ServiceDef:
    """The sidecar a service's ``Connect.SidecarService`` asks for, with Consul's defaults filled in from the
    parent. Port 0 and no checks are left for the agent: it picks a free port, then the default checks."""
    f = Fields(data, SIDECAR, SERVICE_FIELDS - {"Connect"})
    svc = service_row(f, f.str("Name") or parent["Service"] + SIDECAR_SUFFIX)
    if svc["Kind"] not in ("", CONNECT_PROXY):
        raise Invalid(f"{SIDECAR}: Kind must be {CONNECT_PROXY}, not {svc['Kind']!r}")
    proxy = parse_proxy(f.obj("Proxy"), f"{SIDECAR}.Proxy")
    if not proxy["LocalServiceAddress"] or not proxy["LocalServicePort"]:
        proxy["LocalServiceAddress"] = proxy["LocalServiceAddress"] or "127.0.0.1"
        proxy["LocalServicePort"] = proxy["LocalServicePort"] or parent["Port"]
    svc.update(
        # The ID is always derived from the parent's: that is how the agent finds it again to deregister it.
        ID=parent["ID"] + SIDECAR_SUFFIX, Kind=CONNECT_PROXY,
        Tags=svc["Tags"] or list(parent["Tags"]), Meta=svc["Meta"] or dict(parent["Meta"]),
        Address=svc["Address"] or parent["Address"],
        Proxy=proxy | {"DestinationServiceName": proxy["DestinationServiceName"] or parent["Service"],
                       "DestinationServiceID": proxy["DestinationServiceID"] or parent["ID"]})
    return svc, _embedded_checks(f, svc, scripts)


def sidecar_checks(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Consul's default checks for a sidecar that defines none: its port listening, and its parent's health."""
    address = svc["Address"] or svc["Proxy"]["LocalServiceAddress"]
    host = f"[{address}]" if ":" in address else address
    parent = svc["Proxy"]["DestinationServiceID"]
    raw = [{"Name": "Connect Sidecar Listening", "TCP": f"{host}:{svc['Port']}", "Interval": "10s"},
           {"Name": f"Connect Sidecar Aliasing {parent}", "AliasService": parent}]
    return [parse_check(r, SIDECAR, svc["ID"], f"service:{svc['ID']}:{i + 1}") for i, r in enumerate(raw)]


def complete_sidecar(sidecar: ServiceDef, services: Mapping[str, dict[str, Any]],
                     taken: Collection[int] = ()) -> ServiceDef:
    """Give a sidecar without a port the first free one of the range (keeping the one it already has among
    ``services``, the agent's, as Consul does, so a re-registration or reload does not move it), and Consul's
    default checks when it defines none. ``taken``: ports given to other sidecars not registered yet."""
    svc, checks = sidecar
    if not svc["Port"]:
        old = services.get(svc["ID"])
        used = {s["Port"] for s in services.values()} | set(taken)
        port = old["Port"] if old is not None and old["Port"] in SIDECAR_PORTS else next(
            (p for p in SIDECAR_PORTS if p not in used), None)
        if port is None:
            raise Failed("no port provided for sidecar_service and none left in the configured range "
                         f"[{SIDECAR_PORTS.start}, {SIDECAR_PORTS.stop - 1}]")
        svc = dict(svc, Port=port)
    return svc, checks or sidecar_checks(svc)


def proxies(svc: dict[str, Any], service_id: str) -> bool:
    """Whether ``svc`` is a connect-proxy for the service ``service_id``."""
    return svc.get("Kind") == CONNECT_PROXY and (svc.get("Proxy") or {}).get("DestinationServiceID") == service_id


def check_kind(check: dict[str, Any]) -> str:
    """``ttl``, ``alias``, ``maintenance`` or the kind of probe that runs the check."""
    return str(check["Type"])


def definition(check: dict[str, Any]) -> dict[str, Any]:
    """What the check's runner needs, as parse_check validated it."""
    d: dict[str, Any] = check["Definition"]
    return d


def ttl(check: dict[str, Any]) -> str:
    return str(check["Definition"]["TTL"])


def reap_after(check: dict[str, Any]) -> str | None:
    """How long the check may stay critical before its service is deregistered, if it says."""
    after: str | None = check["Definition"].get("DeregisterCriticalServiceAfter")
    return after


def parse_service(data: Any, scripts: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]], ServiceDef | None]:
    """An AgentService row, the checks the definition embeds (``Check`` and ``Checks``) and the sidecar its
    ``Connect.SidecarService`` asks for, if any; ``scripts`` as for parse_check."""
    f = Fields(data, "Service", SERVICE_FIELDS)
    svc = service_row(f, f.str("Name"))
    if svc["Kind"] == CONNECT_PROXY:
        svc["Proxy"] = parse_proxy(f.obj("Proxy"), "Service.Proxy")
        _check_proxy(svc, "Service")
    connect = Fields(f.obj("Connect"), "Service.Connect", {"Native", "SidecarService"})
    # Only Native is kept: the sidecar becomes a service of its own, as in Consul.
    if connect.bool("Native"):
        svc["Connect"] = {"Native": True}
    sidecar = None
    if connect.has("SidecarService"):
        if svc["Kind"]:
            raise Invalid(f"{SIDECAR}: a {svc['Kind']} service cannot have a sidecar")
        sidecar = _sidecar(svc, connect.obj("SidecarService"), scripts)
    return svc, _embedded_checks(f, svc, scripts), sidecar
