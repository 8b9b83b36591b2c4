"""`buoy members`: the nodes of the cluster and their liveness, as the servers see them."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import click

from buoy.api.client import Client
from buoy.cli.errors import Fail, Usage, failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulCommand, option, with_client
from buoy.cli.output import columns, out

# The `Status` integers of /v1/agent/members, named as Consul prints them.
STATUS_NAMES = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
SERVER_ROLE = "consul"
ALL_SEGMENTS = "_all"


def _address(member: dict[str, Any]) -> str:
    addr, port = member.get("Addr", ""), member.get("Port", 0)
    try:
        if ipaddress.ip_address(addr).version == 6:
            return f"[{addr}]:{port}"
    except ValueError:
        pass
    return f"{addr}:{port}"


def _display_tags(member: dict[str, Any], segment: str) -> dict[str, str]:
    """The member's tags with the partition and segment columns filled in the way Consul shows them."""
    tags = {k: str(v) for k, v in (member.get("Tags") or {}).items()}
    partition = tags.get("ap") or "default"
    tags["ap"] = partition
    if partition != "default":
        tags["segment"] = ""
    elif segment == ALL_SEGMENTS and tags.get("role") == SERVER_ROLE:
        tags["segment"] = "<all>"
    elif not tags.get("segment"):
        tags["segment"] = "<default>"
    return tags


@click.command(cls=ConsulCommand, context_settings=CONTEXT_SETTINGS)
@option("detailed", is_flag=True, help="Show every tag of each member.")
@option("status", "status_re", default=".*", metavar="REGEX", help="Only members whose status matches.")
@option("wan", is_flag=True, help="List the servers of the WAN pool instead.")
@option("segment", metavar="NAME", help="Only members of this network segment.")
@option("filter", metavar="EXPR", help="Filter expression applied by the agent.")
@with_client
async def members(
    client: Client, detailed: bool, status_re: str, wan: bool, segment: str | None, filter: str | None
) -> None:
    """List the members of the cluster."""
    try:
        status_filter = re.compile(status_re)
    except re.error as exc:
        raise Usage(f"Failed to compile status regexp: {exc}") from None
    with failing_with("Error retrieving members"):
        found = await client.agent_members(wan=wan, segment=segment, filter=filter)

    shown = []
    for member in found:
        status = STATUS_NAMES.get(member.get("Status", 0), "unknown")
        if status_filter.search(status):
            shown.append((member, status, _display_tags(member, segment or ALL_SEGMENTS)))
    if not shown:
        # Consul exits 2 when nothing matches; scripts test `consul members -status=alive` that way.
        raise Fail("No members match the given query.", code=2)
    shown.sort(
        key=lambda m: (
            m[2].get("role") != SERVER_ROLE,
            m[2]["ap"] != "default",
            m[2]["segment"],
            m[2]["ap"],
            m[0].get("Name", ""),
        )
    )

    if detailed:
        rows: list[tuple[object, ...]] = [("Node", "Address", "Status", "Tags")]
        rows += [
            (m.get("Name", ""), _address(m), status, ",".join(f"{k}={v}" for k, v in sorted(tags.items())))
            for m, status, tags in shown
        ]
    else:
        rows = [("Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment")]
        rows += [
            (
                m.get("Name", ""),
                _address(m),
                status,
                "server" if tags.get("role") == SERVER_ROLE else "client",
                tags.get("build", "").split(":")[0] or "-",
                tags.get("vsn", ""),
                tags.get("dc", ""),
                tags["ap"],
                tags["segment"],
            )
            for m, status, tags in shown
        ]
    out(columns(rows))
