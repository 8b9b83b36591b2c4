"""Consul's catalog objects (agent/structs/structs.go): a ``Node``, its services (``AgentService``) and its
health checks (``HealthCheck``); the decoding and validation of a catalog registration and deregistration
(/v1/catalog/register and /deregister); the rows the catalog table stores; and the API shapes: a service
instance with its node (``ServiceNode``, /v1/catalog/service), with its checks (``CheckServiceNode``,
/v1/health/service and prepared queries), a node with its services (``NodeServices``).

Rows are ``dict``s keyed by Consul's field names, which are also their JSON names; key order is JSON order.
Every message here is Consul's, word for word: clients and the integration tests compare them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from buoy.core.decode import Fields
from buoy.core.errors import Invalid
from buoy.core.structs.definitions import CONNECT_PROXY, service_row

REGISTER_FIELDS = {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta", "Service", "Check",
                   "Checks", "SkipNodeUpdate", "Namespace", "Partition", "PeerName", "Locality", "Token",
                   "EnterpriseMeta", "WriteRequest"}
SERVICE_FIELDS = {"ID", "Service", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Kind", "Proxy",
                  "Connect", "Weights", "EnableTagOverride", "SocketPath", "Namespace", "Partition",
                  "PeerName", "Datacenter", "Locality", "CreateIndex", "ModifyIndex"}
CHECK_FIELDS = {"Node", "CheckID", "ID", "Name", "Notes", "Status", "Output", "ServiceID", "ServiceName",
                "ServiceTags", "Type", "Interval", "Timeout", "Definition", "ExposedPort", "Namespace",
                "Partition", "PeerName", "CreateIndex", "ModifyIndex"}
DEREGISTER_FIELDS = {"Node", "ServiceID", "CheckID", "Datacenter", "Namespace", "Partition", "PeerName", "Token",
                     "WriteRequest"}
HEALTH_STATES = ("passing", "warning", "critical", "maintenance")
HEALTH_ANY = "any"  # Consul's api.HealthAny: /v1/health/state/any lists every check
RAFT_INDEX = ("CreateIndex", "ModifyIndex")


def service_key(name: str) -> str:
    """Service names are matched without regard to case, as Consul's catalog matches them (its indexes are
    lower-cased), so "Web" is found as web.service.consul; answers show a name as it was registered."""
    return name.lower()


def check_status(status: str) -> str:
    if status not in HEALTH_STATES:
        raise Invalid(f"Invalid check status {status!r}")
    return status


# ---- decoding ---------------------------------------------------------------------------------------


def _service(data: Any) -> dict[str, Any]:
    f = Fields(data, "Service", SERVICE_FIELDS)
    svc = service_row(f, f.str("Service"))
    for extra in ("Proxy", "Connect"):
        if f.obj(extra) is not None:
            svc[extra] = f.obj(extra)
    return svc


def _check(data: Any, node: str, i: int) -> dict[str, Any]:
    f = Fields(data, f"Checks[{i}]", CHECK_FIELDS)
    check_id = f.str("CheckID") or f.str("ID") or f.str("Name")
    if not check_id:
        raise Invalid("Missing check name")
    status = check_status(f.str("Status") or "critical")
    definition = f.obj("Definition") or {}
    return {
        "Node": f.str("Node") or node,
        "CheckID": check_id,
        "Name": f.str("Name") or check_id,
        "Status": status,
        "Notes": f.str("Notes"),
        "Output": f.str("Output"),
        "ServiceID": f.str("ServiceID"),
        "Type": f.str("Type"),
        "Interval": f.str("Interval") or str(definition.get("Interval", "") or ""),
        "Timeout": f.str("Timeout") or str(definition.get("Timeout", "") or ""),
        "ExposedPort": 0,
        "Definition": definition,
    }


def parse_registration(body: Any, default_dc: str) -> dict[str, Any]:
    """A /v1/catalog/register body (Consul's RegisterRequest) in the canonical form the state machine applies."""
    f = Fields(body, "Request", REGISTER_FIELDS)
    node = f.str("Node")
    if not node:
        raise Invalid("Missing node name")
    address = f.str("Address")
    if not address:
        raise Invalid("Missing node address")
    dc = f.str("Datacenter") or default_dc
    reg: dict[str, Any] = {
        "Node": node, "Address": address, "ID": f.str("ID"), "Datacenter": dc,
        "TaggedAddresses": f.str_map("TaggedAddresses"), "Meta": f.str_map("NodeMeta"),
        "SkipNodeUpdate": f.bool("SkipNodeUpdate"), "Service": None, "Checks": [],
    }
    if f.obj("Service") is not None:
        reg["Service"] = _service(f.obj("Service"))
    reg["Checks"] = [_check(c, node, i) for i, c in enumerate(f.checks())]
    for check in reg["Checks"]:
        if check["Node"] != node:
            raise Invalid(f"Check node {check['Node']!r} does not match registration node {node!r}")
    return reg


class Deregistration(NamedTuple):
    """What a /v1/catalog/deregister removes: the service (with its checks), else the check, else the node."""

    node: str
    service_id: str
    check_id: str


def parse_deregistration(body: Any) -> Deregistration:
    f = Fields(body, "Request", DEREGISTER_FIELDS)
    node = f.str("Node")
    if not node:
        raise Invalid("Missing node name")
    return Deregistration(node, f.str("ServiceID"), f.str("CheckID"))


# ---- the rows the catalog table stores ----------------------------------------------------------------


def _indexed(row: dict[str, Any], old: dict[str, Any] | None, index: int) -> dict[str, Any]:
    return dict(row, CreateIndex=old["CreateIndex"] if old else index, ModifyIndex=index)


def stored_node(reg: dict[str, Any], old: dict[str, Any] | None, index: int) -> dict[str, Any]:
    """The Node row a registration makes of ``old`` (None for a new node): a registration without an ID
    keeps the one the node has."""
    return _indexed({
        "ID": reg.get("ID") or (old["ID"] if old else ""),
        "Node": reg["Node"],
        "Address": reg["Address"],
        "Datacenter": reg["Datacenter"],
        "TaggedAddresses": reg.get("TaggedAddresses") or {},
        "Meta": reg.get("Meta") or {},
    }, old, index)


def stored_service(svc: dict[str, Any], old: dict[str, Any] | None, index: int) -> dict[str, Any]:
    return _indexed(svc, old, index)


def with_service(check: dict[str, Any], svc: dict[str, Any] | None) -> dict[str, Any]:
    """A check as Consul shows it, with the name and tags of its service (empty for a node's own check)."""
    return dict(check, ServiceName=svc["Service"] if svc else "", ServiceTags=list(svc["Tags"]) if svc else [])


def stored_check(check: dict[str, Any], svc: dict[str, Any] | None, old: dict[str, Any] | None,
                 index: int) -> dict[str, Any]:
    """The HealthCheck row for ``check`` on service ``svc`` (None for a node's own check)."""
    return _indexed(with_service(dict(check, ServiceID=check.get("ServiceID") or ""), svc), old, index)


def unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a re-registration changes nothing but the indexes, so it need not wake watchers."""
    return {k: v for k, v in old.items() if k not in RAFT_INDEX} == {k: v for k, v in new.items()
                                                                     if k not in RAFT_INDEX}


def connect_name(svc: dict[str, Any]) -> str | None:
    """The service whose mesh traffic this instance takes: a proxy's destination, a native service's own name."""
    if svc.get("Kind") == CONNECT_PROXY:
        return (svc.get("Proxy") or {}).get("DestinationServiceName") or None
    return svc["Service"] if (svc.get("Connect") or {}).get("Native") else None


# ---- the agent's rows: its services and checks, and what anti-entropy registers of them ----------------

# What anti-entropy compares of a check: all of it but what the catalog adds (Node, the service's name and
# tags, the indexes).
SYNCED_CHECK_FIELDS = ("Name", "Status", "Notes", "Output", "ServiceID", "Type", "Interval", "Timeout",
                       "Definition")


def service_id(svc: dict[str, Any]) -> str:
    return str(svc["ID"])


def service_port(svc: dict[str, Any]) -> int:
    return int(svc["Port"])


def check_id(check: dict[str, Any]) -> str:
    return str(check["CheckID"])


def check_service_id(check: dict[str, Any]) -> str:
    """The ID of the service the check belongs to, empty for a check of the node itself."""
    return str(check["ServiceID"])


def status(check: dict[str, Any]) -> str:
    return str(check["Status"])


def service_in_sync(remote: dict[str, Any] | None, svc: dict[str, Any]) -> bool:
    """Whether the catalog's row holds every field of the agent's (it adds its indexes)."""
    return remote is not None and all(remote.get(k) == v for k, v in svc.items())


def check_in_sync(remote: dict[str, Any] | None, check: dict[str, Any], but_output: bool = False) -> bool:
    """Whether the catalog's row matches the agent's check; ``but_output``: in everything but its output."""
    return remote is not None and all(remote.get(k) == check[k] for k in SYNCED_CHECK_FIELDS
                                      if not (but_output and k == "Output"))


def service_registration(node: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
    """The RegisterRequest for one of the agent's services; ``node`` is the node's own part of it."""
    return dict(node, Service=svc)


def checks_registration(node: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(node, Checks=checks)


def node_check(check: dict[str, Any], node: str) -> dict[str, Any]:
    """The agent's check as registered for its node."""
    return dict(check, Node=node)


# ---- matching -----------------------------------------------------------------------------------------


def has_tags(svc: dict[str, Any], tags: Iterable[str]) -> bool:
    return all(t in svc["Tags"] for t in tags)


def has_node_meta(node: dict[str, Any], pairs: Iterable[tuple[str, str]]) -> bool:
    return all(node["Meta"].get(k) == v for k, v in pairs)


def decides_health(check: dict[str, Any], service_id: str) -> bool:
    """Whether ``check`` counts toward the health of the instance ``service_id``: its own checks and the
    node's (a node-level check counts against every service on the node, as in Consul)."""
    return check["ServiceID"] in ("", service_id)


def all_passing(checks: Iterable[dict[str, Any]]) -> bool:
    return all(c["Status"] == "passing" for c in checks)


def in_state(check: dict[str, Any], state: str) -> bool:
    """Whether a check is in ``state``: one of HEALTH_STATES, or HEALTH_ANY for every check."""
    return state == HEALTH_ANY or check["Status"] == state


# ---- the API's shapes -------------------------------------------------------------------------------


def agent_service(svc: dict[str, Any]) -> dict[str, Any]:
    out = dict(svc)
    out.setdefault("Kind", "")
    return out


def service_node(node: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
    return {
        "ID": node["ID"],
        "Node": node["Node"],
        "Address": node["Address"],
        "Datacenter": node["Datacenter"],
        "TaggedAddresses": node["TaggedAddresses"],
        "NodeMeta": node["Meta"],
        "ServiceKind": svc.get("Kind", ""),
        "ServiceID": svc["ID"],
        "ServiceName": svc["Service"],
        "ServiceTags": svc["Tags"],
        "ServiceAddress": svc["Address"],
        "ServiceTaggedAddresses": svc["TaggedAddresses"],
        "ServiceWeights": svc["Weights"],
        "ServiceMeta": svc["Meta"],
        "ServicePort": svc["Port"],
        "ServiceSocketPath": svc.get("SocketPath", ""),
        "ServiceEnableTagOverride": svc["EnableTagOverride"],
        "ServiceProxy": svc.get("Proxy") or {},
        "ServiceConnect": svc.get("Connect") or {},
        "CreateIndex": svc["CreateIndex"],
        "ModifyIndex": svc["ModifyIndex"],
    }


def health_entry(node: dict[str, Any], svc: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """One instance as /v1/health/service lists it (Consul's CheckServiceNode)."""
    return {"Node": node, "Service": agent_service(svc), "Checks": checks}


def service_tags(svcs: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """/v1/catalog/services: each service name with its instances' tags, each tag once, names in order. Names
    are kept as registered, "Web" apart from "web", as Consul lists them."""
    out: dict[str, list[str]] = {}
    for svc in svcs:
        tags = out.setdefault(svc["Service"], [])
        tags.extend(t for t in svc["Tags"] if t not in tags)
    return dict(sorted(out.items()))


def node_services(node: dict[str, Any], svcs: list[dict[str, Any]]) -> dict[str, Any]:
    """A node with its services by ID (Consul's NodeServices, /v1/catalog/node)."""
    return {"Node": node, "Services": {svc["ID"]: agent_service(svc) for svc in svcs}}


def node_service_list(node: dict[str, Any], svcs: list[dict[str, Any]]) -> dict[str, Any]:
    """A node with a list of its services (Consul's NodeServiceList, /v1/catalog/node-services)."""
    return {"Node": node, "Services": [agent_service(svc) for svc in svcs]}


# ---- reading the API's answers ------------------------------------------------------------------------
# For the readers of Buoy's own API (DNS's views): a field an answer omits or nulls reads as its zero value.


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str
    datacenter: str
    meta: Mapping[str, Any]


def read_node(row: dict[str, Any]) -> NodeInfo:
    """A ``/v1/catalog/nodes`` row, or the ``Node`` of a health entry."""
    return NodeInfo(row["Node"], row.get("Address") or "", row.get("Datacenter") or "", row.get("Meta") or {})


def entry_statuses(entry: dict[str, Any]) -> set[str]:
    """The states of a health entry's checks, its node's checks included."""
    return {c.get("Status") for c in entry.get("Checks") or ()}


@dataclass(frozen=True)
class InstanceInfo:
    node: NodeInfo
    address: str  # "" when the service uses its node's address
    port: int
    tags: list[str]
    weights: Mapping[str, Any]

    def weight(self, warning: bool) -> int:
        """Weights.Warning for an instance with a warning check, else Weights.Passing; 1 when unset."""
        return int(self.weights.get("Warning", 1) if warning else self.weights.get("Passing", 1))


def read_instance(entry: dict[str, Any]) -> InstanceInfo:
    """The service instance of a health entry (``/v1/health/service`` or a prepared query's ``Nodes``)."""
    svc = entry["Service"]
    return InstanceInfo(read_node(entry["Node"]), svc.get("Address") or "", int(svc.get("Port") or 0),
                        svc.get("Tags") or [], svc.get("Weights") or {})
