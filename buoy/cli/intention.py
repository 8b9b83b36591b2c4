"""`buoy intention`: create, read, delete, list, check and match intentions, with Consul's flags, output and
exit codes (`check` exits 0 when allowed, 1 when denied and 2 when it cannot tell, as Consul's does)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from buoy.api.client import Client, ClientError, Response
from buoy.cli.errors import Fail, Usage, failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulGroup, KeyValue, option, with_client
from buoy.cli.output import columns, out

BASE = "/v1/connect/intentions"
EXIT_DENIED, EXIT_UNKNOWN = 1, 2
# Consul prints a zero time for intentions written by name, which have no creation time.
_ZERO_TIME = "Monday, 01-Jan-01 00:00:00 UTC"


@click.group(cls=ConsulGroup, context_settings=CONTEXT_SETTINGS)
def intention() -> None:
    """Manage intentions: which services may connect to which."""


def _side(ixn: dict[str, Any], side: str) -> str:
    """The source or destination as Consul shows it: `name`, or `ns/name` outside the default namespace."""
    ns, name = ixn.get(f"{side}NS") or "", ixn.get(f"{side}Name") or ""
    return f"{ns}/{name}" if ns and ns != "default" else name


def _label(ixn: dict[str, Any]) -> str:
    """Consul's api.Intention String(): `web => db (allow)`."""
    perms = ixn.get("Permissions") or []
    detail = ixn.get("Action", "") if not perms else "1 permission" if len(perms) == 1 else f"{len(perms)} permissions"
    return f"{_side(ixn, 'Source')} => {_side(ixn, 'Destination')} ({detail})"


def _target(text: str, side: str) -> dict[str, str]:
    """The intention fields of one side given as `name`, `namespace/name` or `partition/namespace/name`
    (the agent refuses namespaces and partitions other than the default ones)."""
    parts = text.split("/")
    if len(parts) > 3:
        raise Usage(f"Error: Invalid intention {side.lower()}: input can contain at most two '/'")
    partition, ns = ([""] * (3 - len(parts)) + parts)[:2]
    return {f"{side}Partition": partition, f"{side}NS": ns, f"{side}Name": parts[-1]}


def _from_args(args: tuple[str, ...], action: str, meta: dict[str, str]) -> dict[str, Any]:
    if len(args) != 2:
        raise Usage("Error: Must specify two arguments: source and destination")
    return {**_target(args[0], "Source"), **_target(args[1], "Destination"), "SourceType": "consul",
            "Action": action, "Meta": meta}


def _from_files(paths: tuple[str, ...]) -> list[dict[str, Any]]:
    """Intentions as JSON files hold them; `-` reads stdin."""
    found = []
    for path in paths:
        try:
            ixn = json.loads(sys.stdin.read() if path == "-" else Path(path).read_text())
        except OSError as exc:
            raise Fail(f"Error: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise Fail(f"Error: {path} is not JSON: {exc}") from None
        if not isinstance(ixn, dict):
            raise Fail(f"Error: {path}: expected one intention as a JSON object")
        # Go decodes field names in any case; so does the agent, but this command reads some of them itself.
        ixn = {_FIELDS.get(k.lower(), k): v for k, v in ixn.items()}
        if ixn.get("Permissions"):
            raise Fail(f"Error: cannot create L7 intention from file {path!r} using this CLI; write it with "
                       "PUT /v1/connect/intentions/exact instead")
        found.append(ixn)
    return found


_FIELDS = {k.lower(): k for k in ("ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName",
                                  "SourceType", "Action", "Permissions", "Meta")}


def _exact_params(ixn: dict[str, Any]) -> dict[str, str]:
    return {"source": _side(ixn, "Source"), "destination": _side(ixn, "Destination")}


@intention.command("create")
@option("allow", is_flag=True, help="Create an intention that allows when matched (the default).")
@option("deny", is_flag=True, help="Create an intention that denies when matched.")
@option("file", "from_files", is_flag=True, help="Read intention data from one or more files ('-' for stdin).")
@option("replace", is_flag=True, help="Replace a matching intention; its other fields are not kept.")
@option("meta", type=KeyValue(), multiple=True, metavar="KEY=VALUE", help="Metadata for the intention; repeatable.")
@click.argument("args", nargs=-1, metavar="SRC DST | -file FILE...")
@with_client
async def create(client: Client, allow: bool, deny: bool, from_files: bool, replace: bool,
                 meta: tuple[tuple[str, str], ...], args: tuple[str, ...]) -> None:
    """Create intentions: SRC may (or, with -deny, may not) connect to DST."""
    if allow and deny:
        raise Usage("Only one of -allow or -deny may be specified.")
    ixns = _from_files(args) if from_files else [_from_args(args, "deny" if deny else "allow", dict(meta))]
    for ixn in ixns:
        label = _label(ixn)
        if replace:
            params = _exact_params(ixn)
            pair = f"with source {json.dumps(params['source'])} and destination {json.dumps(params['destination'])}"
            with failing_with(f"Error looking up intention for replacement {pair}"):
                old = _found(await client.get(f"{BASE}/exact", params, allow_404=True))
            if old is not None:
                with failing_with(f"Error replacing intention {pair}"):
                    if old.get("ID"):
                        await client.request("PUT", f"{BASE}/{quote(old['ID'], safe='')}",
                                             json_body=dict(ixn, ID=old["ID"]))
                    else:  # written by name: it has no ID to update by
                        await client.request("PUT", f"{BASE}/exact", params=params, json_body=ixn)
                continue
        with failing_with(f"Error creating intention {json.dumps(label)}"):
            await client.request("POST", BASE, json_body=ixn)
        out(f"Created: {label}")


def _found(resp: Response) -> dict[str, Any] | None:
    """The intention a read returned, or None for a 404 (whose body is a message, not JSON)."""
    return resp.json() if resp.status == 200 else None


async def _fetch(client: Client, args: tuple[str, ...]) -> dict[str, Any]:
    """The intention `ID` or `SRC DST` names (Consul's GetFromArgs)."""
    if len(args) not in (1, 2):
        raise Usage("command requires exactly 1 or 2 arguments")
    if len(args) == 1:
        path, params = f"{BASE}/{quote(args[0], safe='')}", None
        missing = f"Intention not found with ID {json.dumps(args[0])}"
    else:
        path, params = f"{BASE}/exact", {"source": args[0], "destination": args[1]}
        missing = f"Intention not found with source {json.dumps(args[0])} and destination {json.dumps(args[1])}"
    with failing_with("Error reading the intention"):
        found = _found(await client.get(path, params, allow_404=True))
    if found is None:
        raise Fail(missing)
    return found


def _created_at(text: str | None) -> str:
    """Go's time.RFC850 of the creation time, in the local zone, as Consul prints it."""
    try:
        stamp = datetime.fromisoformat(text or "")
    except ValueError:
        return _ZERO_TIME
    return stamp.astimezone().strftime("%A, %d-%b-%y %H:%M:%S %Z")


@intention.command("get")
@click.argument("args", nargs=-1, metavar="SRC DST | ID")
@with_client
async def get(client: Client, args: tuple[str, ...]) -> None:
    """Show an intention, by source and destination or by ID."""
    ixn = await _fetch(client, args)
    rows: list[tuple[str, Any]] = [("Source:", _side(ixn, "Source")), ("Destination:", _side(ixn, "Destination"))]
    rows += [(f"{k}:", ixn[k]) for k in ("Action", "ID", "Description") if ixn.get(k)]
    rows += [(f"Meta[{k}]:", v) for k, v in sorted((ixn.get("Meta") or {}).items())]
    rows.append(("Created At:", _created_at(ixn.get("CreatedAt"))))
    out(columns(rows))
    if ixn.get("Permissions"):
        out("Permissions:\n" + json.dumps(ixn["Permissions"], indent=2))


@intention.command("delete")
@click.argument("args", nargs=-1, metavar="SRC DST | ID")
@with_client
async def delete(client: Client, args: tuple[str, ...]) -> None:
    """Delete an intention, by source and destination or by ID. This cannot be undone."""
    if len(args) not in (1, 2):
        raise Usage("command requires exactly 1 or 2 arguments")
    with failing_with("Error deleting the intention"):
        if len(args) == 1:
            await client.delete(f"{BASE}/{quote(args[0], safe='')}")
        else:
            await client.delete(f"{BASE}/exact", {"source": args[0], "destination": args[1]})
    out("Intention deleted.")


@intention.command("list")
@with_client
async def listing(client: Client) -> None:
    """List every intention, highest precedence first."""
    with failing_with("Failed to retrieve the intentions list"):
        ixns = (await client.query(BASE)).json() or []
    if not ixns:
        raise Fail("There are no intentions.", 2)
    rows: list[tuple[object, ...]] = [("ID", "Source", "Action", "Destination", "Precedence")]
    rows += [(i.get("ID", ""), i["SourceName"], i.get("Action", ""), i["DestinationName"], i["Precedence"])
             for i in ixns]
    out(columns(rows))


@intention.command("check")
@click.argument("args", nargs=-1, metavar="SRC DST")
@with_client
async def check(client: Client, args: tuple[str, ...]) -> int:
    """Would SRC be allowed to connect to DST? Prints Allowed (exit 0) or Denied (exit 1)."""
    if len(args) != 2:
        raise Usage("Error: command requires exactly two arguments: src and dst")
    try:
        resp = await client.get(f"{BASE}/check", {"source": args[0], "destination": args[1]})
        allowed = bool((resp.json() or {}).get("Allowed"))
    except ClientError as exc:
        # 2, not 1: 1 means "denied" here.
        raise Fail(f"Error checking the connection: {exc}", EXIT_UNKNOWN) from None
    out("Allowed" if allowed else "Denied")
    return 0 if allowed else EXIT_DENIED


@intention.command("match")
@option("source", "by_source", is_flag=True, help="Match intentions with the given source.")
@option("destination", "by_destination", is_flag=True, help="Match intentions with the given destination (default).")
@click.argument("args", nargs=-1, metavar="SRC_OR_DST")
@with_client
async def match(client: Client, by_source: bool, by_destination: bool, args: tuple[str, ...]) -> None:
    """Show the intentions that apply to a source or destination, in the order they are evaluated."""
    if len(args) != 1:
        raise Usage("Error: command requires exactly one argument: src or dst")
    if by_source and by_destination:
        raise Usage("Error: only one of -source or -destination may be specified")
    params = {"by": "source" if by_source else "destination", "name": args[0]}
    with failing_with("Error matching the connection"):
        found = (await client.query(f"{BASE}/match", params)).json() or {}
    for ixn in found.get(args[0]) or []:
        out(_label(ixn))
