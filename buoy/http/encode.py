"""The one place that turns stored rows into Consul's JSON objects (field names and shapes)."""

from __future__ import annotations

import base64
from typing import Any


def kv_pair(entry: dict[str, Any]) -> dict[str, Any]:
    value = entry["Value"]
    out: dict[str, Any] = {
        "LockIndex": entry["LockIndex"],
        "Key": entry["Key"],
        "Flags": entry["Flags"],
        "Value": base64.b64encode(value).decode() if value else None,
    }
    if entry.get("Session"):
        out["Session"] = entry["Session"]
    out["CreateIndex"] = entry["CreateIndex"]
    out["ModifyIndex"] = entry["ModifyIndex"]
    return out


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


def session(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["Checks"] = list(row["NodeChecks"])  # the pre-1.7 field, still read by older clients
    return out
