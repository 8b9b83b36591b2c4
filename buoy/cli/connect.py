"""`buoy connect`: the service mesh. `connect ca get-config` / `set-config` read and change the mesh CA's
configuration, with Consul's flags and output."""

from __future__ import annotations

import json
from typing import Any

import click

from buoy.api.client import Client
from buoy.cli.errors import Fail, failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulGroup, option, with_client
from buoy.cli.output import out

CONFIG_PATH = "/v1/connect/ca/configuration"


@click.group(cls=ConsulGroup, context_settings=CONTEXT_SETTINGS)
def connect() -> None:
    """Interact with the service mesh."""


@connect.group("ca")
def ca() -> None:
    """Interact with the service mesh's Certificate Authority (CA)."""


@ca.command("get-config")
@with_client
async def get_config(client: Client) -> None:
    """Display the current mesh CA configuration."""
    with failing_with("Error querying CA configuration"):
        config = (await client.query(CONFIG_PATH)).json()
    # Consul prints its CAConfig struct with Go's encoder: fields in order, map keys sorted, tab indents.
    config["Config"] = dict(sorted((config.get("Config") or {}).items()))
    out(json.dumps(config, indent="\t"))


@ca.command("set-config")
@option("config-file", metavar="PATH", help="The path to the config file to use.")
@option("force-without-cross-signing", is_flag=True,
        help="Go ahead with a root change even if the current CA cannot cross-sign the new root.")
@with_client
async def set_config(client: Client, config_file: str | None, force_without_cross_signing: bool) -> None:
    """Modify the current mesh CA configuration."""
    if not config_file:
        raise Fail("The -config-file flag is required")
    try:
        with open(config_file, encoding="utf-8") as f:
            raw = f.read()
    except OSError as e:
        raise Fail(f"Error reading config file: {e}") from None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise Fail(f"Error parsing config file: {e}") from None
    if not isinstance(doc, dict):
        raise Fail("Error parsing config file: expected a JSON object")
    # Go's decoder matches field names without regard to case; the flag decides cross-signing, as in Consul.
    fields = {k.lower(): v for k, v in doc.items()}
    body: dict[str, Any] = {"Provider": fields.get("provider", ""), "Config": fields.get("config"),
                            "State": fields.get("state"), "ForceWithoutCrossSigning": force_without_cross_signing}
    with failing_with("Error setting CA configuration"):
        await client.request("PUT", CONFIG_PATH, json_body=body)
    out("Configuration updated!")
