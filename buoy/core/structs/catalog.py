"""The catalog's objects as the API shows them: a node's service (``AgentService``), a service instance
with its node (``ServiceNode``, /v1/catalog/service) and with its checks (``CheckServiceNode``,
/v1/health/service and prepared queries)."""

from __future__ import annotations

from typing import Any


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
