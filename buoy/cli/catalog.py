"""`buoy catalog`: list the datacenters, nodes and services the servers know about."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from buoy.api.client import Client
from buoy.cli.errors import failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulGroup, KeyValue, option, with_client
from buoy.cli.output import columns, err, out

node_meta_option = option(
    "node-meta",
    type=KeyValue(),
    multiple=True,
    metavar="KEY=VALUE",
    help="Only nodes with this metadata; repeat to require several.",
)
filter_option = option("filter", metavar="EXPR", help="Filter expression applied by the server.")


@click.group(cls=ConsulGroup, context_settings=CONTEXT_SETTINGS)
def catalog() -> None:
    """List the datacenters, nodes and services in the catalog."""


@catalog.command("datacenters")
@with_client
async def datacenters(client: Client) -> None:
    """List the known datacenters, nearest first."""
    with failing_with("Error listing datacenters"):
        for dc in await client.catalog_datacenters():
            out(dc)


def _pairs(mapping: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((mapping or {}).items()))


@catalog.command("nodes")
@option("detailed", is_flag=True, help="Show full node IDs, tagged addresses and metadata.")
@option("near", metavar="NODE", help="Sort by round-trip time from NODE (_agent: this agent).")
@node_meta_option
@option("service", metavar="NAME", help="Only nodes that provide this service.")
@filter_option
@with_client
async def nodes(
    client: Client,
    detailed: bool,
    near: str | None,
    node_meta: tuple[tuple[str, str], ...],
    service: str | None,
    filter: str | None,
) -> None:
    """List the nodes in the datacenter."""
    meta = dict(node_meta)
    if service:
        with failing_with("Error listing nodes for service"):
            instances = (
                await client.catalog_service(service, near=near, node_meta=meta, filter=filter)
            ).value
        # One row per node, however many instances of the service it runs.
        by_name: dict[str, dict[str, Any]] = {}
        for s in instances:
            by_name.setdefault(s["Node"], {**s, "Meta": s.get("NodeMeta")})
        found = list(by_name.values())
    else:
        with failing_with("Error listing nodes"):
            found = (await client.catalog_nodes(near=near, node_meta=meta, filter=filter)).value
    if not found:
        err("No nodes match the given query - try expanding your search.")
        return

    if detailed:
        rows: list[tuple[object, ...]] = [("Node", "ID", "Address", "DC", "TaggedAddresses", "Meta")]
        rows += [
            (
                n["Node"],
                n.get("ID", ""),
                n.get("Address", ""),
                n.get("Datacenter", ""),
                _pairs(n.get("TaggedAddresses")),
                _pairs(n.get("Meta")),
            )
            for n in found
        ]
    else:
        rows = [("Node", "ID", "Address", "DC")]
        # Like Consul, only the first group of the node UUID: enough to tell nodes apart at a glance.
        rows += [
            (n["Node"], n.get("ID", "").split("-")[0], n.get("Address", ""), n.get("Datacenter", ""))
            for n in found
        ]
    out(columns(rows))


@catalog.command("services")
@option("node", metavar="NAME", help="Only services registered on this node.")
@node_meta_option
@option("tags", is_flag=True, help="Show each service's tags beside it.")
@filter_option
@with_client
async def services(
    client: Client,
    node: str | None,
    node_meta: tuple[tuple[str, str], ...],
    tags: bool,
    filter: str | None,
) -> None:
    """List the services in the datacenter."""
    found: dict[str, list[str]] = {}
    if node:
        with failing_with("Error listing services for node"):
            entry = (await client.catalog_node(node, filter=filter)).value
        for s in ((entry or {}).get("Services") or {}).values():
            found.setdefault(s["Service"], []).extend(s.get("Tags") or [])
    else:
        with failing_with("Error listing services"):
            found = (await client.catalog_services(node_meta=dict(node_meta), filter=filter)).value
    if not found:
        err("No services match the given query - try expanding your search.")
        return

    if tags:
        out(columns([(name, ",".join(sorted(set(found[name] or [])))) for name in sorted(found)], gap=6))
    else:
        for name in sorted(found):
            out(name)
