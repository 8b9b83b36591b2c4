"""The agent's own services and checks (Consul's agent/local state): how a re-registration and a check's
result change the rows :mod:`buoy.core.structs.definitions` makes, the maintenance checks, and the form
``<data-dir>/agent/local.json`` keeps them in, which must go on loading what an earlier release wrote."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from buoy.core.structs import catalog

FORMAT_VERSION = 1
NODE_MAINTENANCE = "_node_maintenance"


def keep_status(check: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """A check registered again with the same definition keeps what it has reported so far."""
    if old is not None and old["Definition"] == check["Definition"]:
        return dict(check, Status=old["Status"], Output=old["Output"])
    return check


def reported(check: dict[str, Any], status: str, output: str) -> dict[str, Any] | None:
    """The check after its runner's result, None when that changes nothing (so nothing is written or synced)."""
    if check["Status"] == status and check["Output"] == output:
        return None
    return dict(check, Status=status, Output=output)


def same_but_status(old: dict[str, Any] | None, check: dict[str, Any]) -> bool:
    """Whether ``old`` is ``check`` but for what its runner reported: a definition that need not restart it."""
    return old is not None and dict(old, Status=check["Status"], Output=check["Output"]) == check


def maintenance_id(service_id: str | None) -> str:
    """The check that puts a service (None: the whole node) in maintenance."""
    return f"_service_maintenance:{service_id}" if service_id is not None else NODE_MAINTENANCE


def maintenance_check(service_id: str | None, reason: str) -> dict[str, Any]:
    """Consul's maintenance check: state ``maintenance`` takes the service, or the node, out of healthy results."""
    what = "service" if service_id is not None else "node"
    return {
        "CheckID": maintenance_id(service_id), "Name": f"{what.capitalize()} Maintenance Mode",
        "Status": "maintenance",
        "Notes": reason or f"Maintenance mode is enabled for this {what}, but no reason was provided. "
                           "This is a default message.",
        "Output": "", "ServiceID": service_id or "", "Type": "maintenance", "Interval": "", "Timeout": "",
        "ExposedPort": 0, "Definition": {},
    }


def persisted(services: Iterable[dict[str, Any]], checks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The document local.json holds."""
    return {"version": FORMAT_VERSION, "services": list(services), "checks": list(checks)}


def restore(doc: dict[str, Any], where: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The services and checks of a local.json document, by ID."""
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"{where}: unsupported format {doc.get('version')!r}")
    return ({catalog.service_id(s): s for s in doc["services"]},
            {catalog.check_id(c): c for c in doc["checks"]})
