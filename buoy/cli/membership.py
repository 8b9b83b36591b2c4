"""`buoy join`, `buoy leave` and `buoy force-leave`: change the cluster's membership through an agent."""

from __future__ import annotations

from urllib.parse import quote

import click

from buoy.api.client import Client, ClientError
from buoy.cli.errors import Fail, failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulCommand, option, with_client
from buoy.cli.output import out


@click.command(cls=ConsulCommand, context_settings=CONTEXT_SETTINGS)
@option("wan", is_flag=True, help="Join the WAN pool (not supported: one datacenter).")
@click.argument("addresses", nargs=-1, required=True)
@with_client
async def join(client: Client, wan: bool, addresses: tuple[str, ...]) -> None:
    """Tell the agent to join the cluster through the servers at ADDRESSES."""
    joined = 0
    for addr in addresses:
        try:
            await client.put(f"/v1/agent/join/{quote(addr, safe='')}", {"wan": True} if wan else None)
            joined += 1
        except ClientError as e:
            click.echo(f"Error joining address '{addr}': {e}", err=True)
    if not joined:
        raise Fail("Failed to join any nodes.")
    out(f"Successfully joined cluster by contacting {joined} nodes.")


@click.command(cls=ConsulCommand, context_settings=CONTEXT_SETTINGS)
@with_client
async def leave(client: Client) -> None:
    """Make the agent leave the cluster gracefully and shut down."""
    with failing_with("Error leaving"):
        await client.put("/v1/agent/leave")
    out("Graceful leave complete")


@click.command("force-leave", cls=ConsulCommand, context_settings=CONTEXT_SETTINGS)
@option("prune", is_flag=True, help="Remove the node from the member list entirely.")
@click.argument("node")
@with_client
async def force_leave(client: Client, prune: bool, node: str) -> None:
    """Take a failed NODE out of the catalog and mark it left."""
    with failing_with("Error force leaving"):
        await client.put(f"/v1/agent/force-leave/{quote(node, safe='')}", {"prune": True} if prune else None)
