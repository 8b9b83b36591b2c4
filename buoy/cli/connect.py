"""`buoy connect`: the service mesh. `connect ca get-config` / `set-config` read and change the mesh CA's
configuration, with Consul's flags and output; `connect proxy` runs the built-in sidecar proxy."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import click

from buoy.api.client import Client, ClientError
from buoy.cli.errors import EXIT_USAGE, Fail, failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulGroup, option, with_client
from buoy.cli.output import out
from buoy.connect.config import ProxyConfigError, standalone
from buoy.connect.proxy import Proxy, SidecarNotFound, find_sidecar
from buoy.log import setup

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


@connect.command("proxy")
@option("sidecar-for", metavar="ID", default="",
        help="The ID of a service instance on the local agent that this proxy should become a sidecar for.")
@option("proxy-id", metavar="ID", default="", help="The proxy's own service ID on the local agent.")
@option("service", metavar="NAME", default="", help="Name of the service this proxy is representing.")
@option("listen", metavar="ADDR", default="", help="Address to listen for inbound connections (with -service).")
@option("service-addr", metavar="ADDR", default="", help="Address of the local service to proxy (with -service).")
@option("upstream", metavar="NAME:PORT", multiple=True,
        help="Upstream service to support connecting to (with -service); may be repeated.")
@option("metrics-addr", metavar="ADDR", default="", help="Serve Prometheus metrics at http://ADDR/metrics.")
@option("log-level", metavar="LEVEL", default="info", help="Log level: trace, debug, info, warn, err.")
@option("log-json", is_flag=True, help="Output logs in JSON format.")
@with_client
async def proxy(client: Client, sidecar_for: str, proxy_id: str, service: str, listen: str, service_addr: str,
                upstream: tuple[str, ...], metrics_addr: str, log_level: str, log_json: bool) -> None:
    """Run the built-in mTLS proxy for a service."""
    if sum(map(bool, (sidecar_for, proxy_id, service))) != 1:
        raise Fail("Error: exactly one of -sidecar-for, -proxy-id or -service is required", code=EXIT_USAGE)
    if (sidecar_for or proxy_id) and (listen or service_addr or upstream):
        raise Fail("Error: -listen, -service-addr and -upstream go with -service; a sidecar takes them from its "
                   "registration", code=EXIT_USAGE)
    setup(log_level, log_json)
    try:
        config = None if service == "" else standalone(service, listen, service_addr, list(upstream))
        if sidecar_for:
            proxy_id = await find_sidecar(client, sidecar_for)
        running = Proxy(client, proxy_id=proxy_id, config=config, metrics_addr=metrics_addr)
        await running.start()
    except (ProxyConfigError, SidecarNotFound) as e:
        raise Fail(f"Error: {e}") from None
    except ClientError as e:
        raise Fail(f"Error: cannot start the proxy: {e}") from None
    except OSError as e:
        raise Fail(f"Error: cannot listen: {e}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.stop()
