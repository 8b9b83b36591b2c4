"""`buoy reload`: have the agent read its config files again, as SIGHUP does."""

from __future__ import annotations

import click

from buoy.api.client import Client
from buoy.cli.errors import failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulCommand, with_client
from buoy.cli.output import out


@click.command(cls=ConsulCommand, context_settings=CONTEXT_SETTINGS)
@with_client
async def reload(client: Client) -> None:
    """Reload the agent's configuration files (services, checks, log level)."""
    with failing_with("Error reloading"):
        await client.put("/v1/agent/reload")
    out("Configuration reload triggered")
