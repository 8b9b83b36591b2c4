"""`buoy operator`: tools for the people who run the servers."""

from __future__ import annotations

import click

from buoy.api.client import Client
from buoy.cli.errors import failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulGroup, with_client
from buoy.cli.output import columns, out


@click.group(cls=ConsulGroup, context_settings=CONTEXT_SETTINGS)
def operator() -> None:
    """Inspect and repair the server cluster."""


@operator.group("raft")
def raft() -> None:
    """Inspect the Raft peer set of the servers."""


@raft.command("list-peers")
@with_client
async def list_peers(client: Client) -> None:
    """Show the servers in the Raft configuration and which one leads."""
    with failing_with("Error getting peers"):
        reply = await client.raft_configuration()
    servers = reply.get("Servers") or []
    header: list[object] = ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
    # Servers that report their last log index get Consul's replication-lag columns.
    with_lag = any("LastIndex" in s for s in servers)
    leader_index = next((s.get("LastIndex", 0) for s in servers if s.get("Leader")), 0)
    if with_lag:
        header += ["Commit Index", "Trails Leader By"]
    rows: list[list[object]] = [header]
    for s in servers:
        row: list[object] = [
            s.get("Node", ""),
            s.get("ID", ""),
            s.get("Address", ""),
            "leader" if s.get("Leader") else "follower",
            "true" if s.get("Voter") else "false",
            s.get("ProtocolVersion") or "<=1",
        ]
        if with_lag:
            behind = max(0, leader_index - s.get("LastIndex", 0))
            trails = "-" if s.get("Leader") else f"{behind} commit" + ("" if behind == 1 else "s")
            row += [s.get("LastIndex", 0), trails]
        rows.append(row)
    out(columns(rows))
