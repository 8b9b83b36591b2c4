"""The catalog table: nodes, the services on them and their health checks, in Consul's shapes.

Besides the rows it keeps the indexes blocking queries need: one per table, one per service name and
one per node, so a watcher of ``web`` wakes only when something about ``web`` changed.
"""

from __future__ import annotations

from typing import Any

from buoy.core.errors import Failed
from buoy.core.structs.catalog import (
    check_status,
    connect_name,
    decides_health,
    service_key,
    stored_check,
    stored_node,
    stored_service,
    unchanged,
)


def service_topic(name: str) -> tuple[str, str]:
    """What a blocking read on a service's instances watches, and what a change to one touches."""
    return ("service", service_key(name))


class CatalogTable:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, dict[str, Any]]] = {}  # node -> service id -> AgentService
        self.checks: dict[str, dict[str, dict[str, Any]]] = {}  # node -> check id -> HealthCheck
        # Keyed by service_key(name):
        self.by_name: dict[str, set[tuple[str, str]]] = {}  # service -> {(node, service id)}
        self.by_connect: dict[str, set[tuple[str, str]]] = {}  # service -> its proxies and native instances
        self.service_index: dict[str, int] = {}
        self.node_index: dict[str, int] = {}
        self.index = {"nodes": 0, "services": 0, "checks": 0}

    # ---- reads -------------------------------------------------------------------------------------

    def instances(self, name: str, connect: bool = False) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(node, service) pairs of a service, in a stable order (node name, then service id); with ``connect``,
        the instances that accept mesh traffic for it instead: its proxies and its Connect-native instances."""
        pairs = sorted((self.by_connect if connect else self.by_name).get(service_key(name), ()))
        return [(self.nodes[n], self.services[n][sid]) for n, sid in pairs]

    def service_checks(self, node: str, service_id: str) -> list[dict[str, Any]]:
        """The checks that decide an instance's health: the node's own checks and the service's."""
        return [c for c in self.checks.get(node, {}).values() if decides_health(c, service_id)]

    def health_entries(self, name: str, connect: bool = False) -> list[tuple[dict[str, Any], dict[str, Any],
                                                                        list[dict[str, Any]]]]:
        """(node, service, checks) for each instance of a service (``connect`` as for instances), the checks
        node-level first, then by ID: what /v1/health/service, /v1/health/connect and prepared queries filter."""
        return [(n, s, sorted(self.service_checks(n["Node"], s["ID"]), key=lambda c: (c["ServiceID"], c["CheckID"])))
                for n, s in self.instances(name, connect)]

    def all_nodes(self) -> list[dict[str, Any]]:
        return [n for _name, n in sorted(self.nodes.items())]

    def all_instances(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Every (node, service) pair, grouped by service name, each group in node then ID order."""
        return [(self.nodes[n], self.services[n][sid])
                for members in self.by_name.values() for n, sid in sorted(members)]

    def node_services(self, node: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A node and its services in ID order (None and [] for a node the catalog does not hold)."""
        row = self.nodes.get(node)
        if row is None:
            return None, []
        return row, [svc for _sid, svc in sorted(self.services[node].items())]

    def node_checks(self, node: str) -> list[dict[str, Any]]:
        return sorted(self.checks.get(node, {}).values(), key=lambda c: c["CheckID"])

    def checks_by_node(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Every node with its checks by ID, in node order."""
        return [(self.nodes[name], [c for _cid, c in sorted(chks.items())])
                for name, chks in sorted(self.checks.items())]

    def own_checks(self, name: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Each instance's node with the checks registered for that instance itself (no node-level ones)."""
        return [(n, [c for c in self.service_checks(n["Node"], svc["ID"]) if c["ServiceID"] == svc["ID"]])
                for n, svc in self.instances(name)]

    def name_index(self, name: str) -> int:
        return self.service_index.get(service_key(name)) or self.index["services"]

    def node_idx(self, node: str) -> int:
        return self.node_index.get(node) or self.index["nodes"]

    # ---- writes ------------------------------------------------------------------------------------

    def _touch_service(self, svc: dict[str, Any], index: int, touched: set[tuple[str, ...]]) -> None:
        """A change to an instance wakes the watchers of its name and, for a proxy, of the service it fronts
        (whose /v1/health/connect and /v1/catalog/connect answers list it)."""
        for name in {svc["Service"], connect_name(svc)} - {None}:
            self.service_index[service_key(name)] = index
            touched.add(service_topic(name))

    def _index(self, svc: dict[str, Any], node: str, add: bool) -> None:
        """Add an instance to (or drop it from) the by-name and by-connect-name indexes."""
        for table, name in ((self.by_name, svc["Service"]), (self.by_connect, connect_name(svc))):
            if name is None:
                continue
            key = service_key(name)
            if add:
                table.setdefault(key, set()).add((node, svc["ID"]))
                continue
            table[key].discard((node, svc["ID"]))
            if not table[key]:
                del table[key]

    def _touch_node(self, node: str, index: int, touched: set[tuple[str, ...]]) -> None:
        """A node-level change affects every service on the node."""
        self.node_index[node] = index
        touched.add(("node", node))
        for svc in self.services.get(node, {}).values():
            self._touch_service(svc, index, touched)

    def ensure_node(self, node: dict[str, Any], index: int, touched: set[tuple[str, ...]],
                    skip_update: bool = False) -> None:
        name = node["Node"]
        old = self.nodes.get(name)
        if old is not None and skip_update:
            return
        merged = stored_node(node, old, index)
        if old is not None and unchanged(old, merged):
            return
        self.nodes[name] = merged
        self.services.setdefault(name, {})
        self.checks.setdefault(name, {})
        self.index["nodes"] = index
        touched.add(("nodes",))
        self._touch_node(name, index, touched)

    def ensure_service(self, node: str, svc: dict[str, Any], index: int,
                       touched: set[tuple[str, ...]]) -> None:
        if node not in self.nodes:
            raise Failed(f"Node {node!r} is not registered")
        sid = svc["ID"]
        old = self.services[node].get(sid)
        row = stored_service(svc, old, index)
        if old is not None and unchanged(old, row):
            return
        if old is not None:  # its name or the service it fronts may have changed
            self._index(old, node, add=False)
            self._touch_service(old, index, touched)
        self.services[node][sid] = row
        self._index(row, node, add=True)
        self._touch_service(row, index, touched)
        self.node_index[node] = index
        self.index["services"] = index
        touched.update({("services",), ("node", node)})

    def ensure_check(self, check: dict[str, Any], index: int,
                     touched: set[tuple[str, ...]]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        node = check["Node"]
        if node not in self.nodes:
            raise Failed(f"Node {node!r} is not registered")
        check_status(check["Status"])
        sid = check.get("ServiceID") or ""
        svc = None
        if sid:
            svc = self.services[node].get(sid)
            if svc is None:
                raise Failed(f"Unknown service ID {sid!r} for check {check['CheckID']!r}")
        old = self.checks[node].get(check["CheckID"])
        row = stored_check(check, svc, old, index)
        if old is not None and unchanged(old, row):
            return old, old
        self.checks[node][check["CheckID"]] = row
        self.index["checks"] = index
        touched.add(("checks",))
        if svc:
            self._touch_service(svc, index, touched)
            self.node_index[node] = index
            touched.add(("node", node))
        else:
            self._touch_node(node, index, touched)
        return old, row

    def delete_check(self, node: str, check_id: str, index: int,
                     touched: set[tuple[str, ...]]) -> None:
        old = self.checks.get(node, {}).get(check_id)
        if old is None:
            return
        del self.checks[node][check_id]
        self.index["checks"] = index
        touched.add(("checks",))
        svc = self.services.get(node, {}).get(old["ServiceID"]) if old["ServiceID"] else None
        if svc is not None:
            self._touch_service(svc, index, touched)
            self.node_index[node] = index
            touched.add(("node", node))
        else:
            self._touch_node(node, index, touched)

    def delete_service(self, node: str, service_id: str, index: int,
                       touched: set[tuple[str, ...]]) -> list[str]:
        """Remove a service and its checks; returns the ids of the checks removed."""
        svc = self.services.get(node, {}).get(service_id)
        if svc is None:
            return []
        gone = [cid for cid, c in self.checks[node].items() if c["ServiceID"] == service_id]
        for cid in gone:
            del self.checks[node][cid]
        if gone:
            self.index["checks"] = index
            touched.add(("checks",))
        del self.services[node][service_id]
        self._index(svc, node, add=False)
        self._touch_service(svc, index, touched)
        self.node_index[node] = index
        self.index["services"] = index
        touched.update({("services",), ("node", node)})
        return gone

    def delete_node(self, node: str, index: int, touched: set[tuple[str, ...]]) -> list[str]:
        """Remove a node with all its services and checks; returns the ids of the checks removed."""
        if node not in self.nodes:
            return []
        gone = list(self.checks.get(node, {}))
        for sid in list(self.services.get(node, {})):
            self.delete_service(node, sid, index, touched)
        self.checks.pop(node, None)
        self.services.pop(node, None)
        del self.nodes[node]
        self.node_index[node] = index
        self.index["nodes"] = index
        self.index["checks"] = index
        touched.update({("nodes",), ("checks",), ("node", node)})
        return gone

    # ---- snapshots ---------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes.values()),
            "services": [[n, s] for n, svcs in self.services.items() for s in svcs.values()],
            "checks": [c for chks in self.checks.values() for c in chks.values()],
            "service_index": self.service_index,
            "node_index": self.node_index,
            "index": self.index,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        for node in data.get("nodes", []):
            self.nodes[node["Node"]] = node
            self.services[node["Node"]] = {}
            self.checks[node["Node"]] = {}
        for node, svc in data.get("services", []):
            self.services[node][svc["ID"]] = svc
            self._index(svc, node, add=True)
        for check in data.get("checks", []):
            self.checks[check["Node"]][check["CheckID"]] = check
        self.service_index = dict(data.get("service_index", {}))
        self.node_index = dict(data.get("node_index", {}))
        self.index.update(data.get("index", {}))

