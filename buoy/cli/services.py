"""`buoy services register` / `deregister`: this agent's services, from flags or from files that hold
service definitions the way agent config files do (`service` / `services`, JSON or HCL)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from buoy.api.client import Client
from buoy.cli.errors import Fail, Usage, failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulGroup, KeyValue, option, with_client
from buoy.cli.output import out
from buoy.config import ConfigError, Sources, build, definitions


@click.group(cls=ConsulGroup, context_settings=CONTEXT_SETTINGS)
def services() -> None:
    """Register and deregister services with the local agent."""


def _from_files(files: tuple[str, ...]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each service of the files: its definition as written, and the row the agent will make of it."""
    try:
        # Read as -dev reads them, as Consul does: the files need not make a whole agent configuration, and
        # script checks pass here (the agent decides whether it runs them).
        cfg = build(Sources(dev=True, files=files))
        rows = definitions(cfg)[0]
    except ConfigError as e:
        raise Fail(f"Error: {e}") from None
    return [(d.body, svc) for d, (svc, _, _) in zip(cfg.services, rows, strict=True)]


def _combine(body: dict[str, Any], flags: dict[str, Any], tags: tuple[str, ...],
             meta: dict[str, str]) -> dict[str, Any]:
    """Consul's CombineArgs: a flag fills a field the file leaves unset; -tag and -meta add to the file's."""
    spelled = {k.lower().replace("_", ""): k for k in body}  # a file may spell a key in any case

    def key(name: str) -> str:
        return spelled.get(name.lower(), name)

    combined = dict(body)
    for name, value in flags.items():
        if value and not body.get(key(name)):
            combined[key(name)] = value
    combined[key("Tags")] = [*(body.get(key("Tags")) or []), *tags]
    combined[key("Meta")] = {**(body.get(key("Meta")) or {}), **meta}
    return combined


@services.command("register")
@option("name", help="Name of the service to register for arg-based registration.")
@option("id", "service_id", help="ID of the service to register for arg-based registration (default: -name).")
@option("address", help="Address of the service to register for arg-based registration.")
@option("port", type=int, default=0, help="Port of the service to register for arg-based registration.")
@option("tag", "tags", multiple=True, help="Tag to add to the service; repeatable.")
@option("meta", type=KeyValue(), multiple=True, metavar="KEY=VALUE", help="Metadata to set on the service; repeatable.")
@click.argument("files", nargs=-1, metavar="[FILE...]")
@with_client
async def register(
    client: Client,
    name: str | None,
    service_id: str | None,
    address: str | None,
    port: int,
    tags: tuple[str, ...],
    meta: tuple[tuple[str, str], ...],
    files: tuple[str, ...],
) -> None:
    """Register services from flags, or from definition files (HCL or JSON), with the local agent."""
    if not files and not name:
        raise Usage("Service registration requires at least one argument or flags.")
    if files and name:
        raise Usage("Service registration requires arguments or -name, not both.")
    flags = {"ID": service_id, "Address": address, "Port": port}
    if files:
        todo = [(_combine(body, flags, tags, dict(meta)), svc["Service"]) for body, svc in _from_files(files)]
    else:
        todo = [(_combine({"Name": name}, flags, tags, dict(meta)), str(name))]
    for body, label in todo:
        with failing_with(f'Error registering service "{label}"'):
            await client.put("/v1/agent/service/register", json_body=body)
        out(f"Registered service: {label}")


@services.command("deregister")
@option("id", "service_id", help="ID to deregister. This must not be set if arguments are given.")
@click.argument("files", nargs=-1, metavar="[FILE...]")
@with_client
async def deregister(client: Client, service_id: str | None, files: tuple[str, ...]) -> None:
    """Deregister services from the local agent, by -id or as named in definition files."""
    if not files and not service_id:
        raise Usage("Service deregistration requires at least one argument or -id.")
    if files and service_id:
        raise Usage("Service deregistration requires arguments or -id, not both.")
    ids = [svc["ID"] for _, svc in _from_files(files)] if files else [str(service_id)]
    for sid in ids:
        with failing_with(f'Error deregistering service "{sid}"'):
            await client.put("/v1/agent/service/deregister/" + quote(sid, safe=""))
        out(f"Deregistered service: {sid}")
