"""`buoy kv`: read and write the key-value store with Consul's flags, messages and exit codes."""

from __future__ import annotations

import binascii
import json
import posixpath
import sys
from base64 import b64decode, b64encode
from typing import Any

import click

from buoy.api.client import Client, decode_value
from buoy.cli.errors import Fail, Usage, failing_with
from buoy.cli.flags import CONTEXT_SETTINGS, UINT64, ConsulGroup, option, with_client
from buoy.cli.output import columns, out

# Consul's flag parser stops at the first argument, so `kv put k -1` stores "-1"; click must do the same
# for the commands whose arguments are data.
DATA_ARGS = {"allow_interspersed_args": False}


@click.group(cls=ConsulGroup, context_settings=CONTEXT_SETTINGS)
def kv() -> None:
    """Read and write the key-value store."""


def _key_arg(args: tuple[str, ...], *, required: bool) -> str:
    if len(args) > 1:
        raise Usage(f"Too many arguments (expected 1, got {len(args)})")
    key = args[0] if args else ""
    # Stored keys never start with "/", but people type them that way; Consul strips it for them too.
    key = key.removeprefix("/")
    if required and not key:
        raise Usage("Error! Missing KEY argument")
    return key


def _read_data(arg: str) -> bytes:
    """DATA as Consul reads it: `@path` is a file, `-` is stdin, anything else is the data itself."""
    if arg.startswith("@"):
        try:
            with open(arg[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise Fail(f"Error! Failed to read file: {exc.strerror}: {arg[1:]}") from None
    if arg == "-":
        return sys.stdin.buffer.read()
    return arg.encode("utf-8", "surrogateescape")


def _value(pair: dict[str, Any], as_base64: bool) -> bytes:
    value = decode_value(pair)
    return b64encode(value) if as_base64 else value


def _detailed(pair: dict[str, Any], as_base64: bool) -> str:
    rows = [
        ("CreateIndex", pair.get("CreateIndex", 0)),
        ("Flags", pair.get("Flags", 0)),
        ("Key", pair.get("Key", "")),
        ("LockIndex", pair.get("LockIndex", 0)),
        ("ModifyIndex", pair.get("ModifyIndex", 0)),
        ("Session", pair.get("Session") or "-"),
        ("Value", _value(pair, as_base64).decode("utf-8", "surrogateescape")),
    ]
    return columns(rows, gap=6)


@kv.command("get")
@option("base64", "as_base64", is_flag=True, help="Base64-encode the value.")
@option("detailed", is_flag=True, help="Show the key's metadata (indexes, flags, session) with its value.")
@option("keys", is_flag=True, help="List the keys under the prefix, not their values.")
@option("recurse", is_flag=True, help="Show every key under the prefix with its value.")
@option("separator", default="/", show_default=True, help="With -keys, list only up to this separator.")
@click.argument("args", nargs=-1, metavar="[KEY_OR_PREFIX]")
@with_client
async def get(
    client: Client,
    args: tuple[str, ...],
    as_base64: bool,
    detailed: bool,
    keys: bool,
    recurse: bool,
    separator: str,
) -> None:
    """Print the value at KEY, or list a prefix with -recurse or -keys."""
    key = _key_arg(args, required=not (keys or recurse))
    with failing_with("Error querying agent"):
        if keys:
            for name in (await client.kv_keys(key, separator)).value:
                out(name)
        elif recurse:
            pairs = (await client.kv_list(key)).value
            for i, pair in enumerate(pairs):
                if not detailed:
                    out(pair["Key"].encode("utf-8", "surrogateescape") + b":" + _value(pair, as_base64))
                    continue
                if i:
                    out()
                out(_detailed(pair, as_base64))
        else:
            found = (await client.kv_get(key)).value
            if found is None:
                raise Fail(f"Error! No key exists at: {key}")
            out(_detailed(found, as_base64) if detailed else _value(found, as_base64))


@kv.command("put", context_settings=DATA_ARGS)
@option("acquire", is_flag=True, help="Take the lock on KEY for -session (creating KEY if needed).")
@option("base64", "as_base64", is_flag=True, help="DATA is base64-encoded.")
@option("cas", is_flag=True, help="Check-and-set: write only if KEY's ModifyIndex is -modify-index.")
@option("flags", type=UINT64, default=0, help="Opaque unsigned integer stored with the key.")
@option("modify-index", type=UINT64, default=0, help="The ModifyIndex KEY must still have, for -cas.")
@option("release", is_flag=True, help="Release the lock that -session holds on KEY.")
@option("session", default="", help="Session ID for -acquire and -release.")
@click.argument("args", nargs=-1, metavar="KEY [DATA|@FILE|-]")
@with_client
async def put(
    client: Client,
    args: tuple[str, ...],
    acquire: bool,
    as_base64: bool,
    cas: bool,
    flags: int,
    modify_index: int,
    release: bool,
    session: str,
) -> None:
    """Write DATA (or nothing) to KEY; DATA may be @FILE, or - for stdin."""
    if not args:
        raise Usage("Error! Missing KEY argument")
    if len(args) > 2:
        raise Usage(f"Too many arguments (expected 1 or 2, got {len(args)})")
    key = args[0]
    if key.startswith("/"):
        raise Usage(f"Error! Invalid key. Key must not begin with a '/': {key}")
    if (release or acquire) and not session:
        raise Usage("Error! Missing -session (required with -acquire and -release)")
    if cas and modify_index == 0:
        raise Usage("Must specify -modify-index with -cas!")
    if cas + acquire + release > 1:
        raise Usage("Error! -cas, -acquire and -release cannot be used together")
    # Flags are checked first so that a bad command line never sits waiting for stdin.
    data = _read_data(args[1]) if len(args) == 2 and args[1] else b""
    if as_base64:
        try:
            data = b64decode(data, validate=True)
        except binascii.Error as exc:
            raise Fail(f"Error! Cannot base 64 decode data: {exc}") from None

    written, failed = f"Success! Data written to: {key}", "Error! Failed writing data"
    mode: dict[str, Any] = {}
    refused, done = failed, written
    if cas:
        failed = f"Error! Did not write to {key}"
        mode, refused = {"cas": modify_index}, f"{failed}: CAS failed"
    elif acquire:
        mode, refused = {"acquire": session}, "Error! Did not acquire lock"
        done = f"Success! Lock acquired on: {key}"
    elif release:
        mode, refused = {"release": session}, "Error! Did not release lock"
        done = f"Success! Lock released on: {key}"
    with failing_with(failed):
        if not await client.kv_put(key, data, flags=flags, **mode):
            raise Fail(refused)
    out(done)


@kv.command("delete")
@option("cas", is_flag=True, help="Delete only if KEY's ModifyIndex is -modify-index.")
@option("modify-index", type=UINT64, default=0, help="ModifyIndex for -cas.")
@option("recurse", is_flag=True, help="Delete every key under the prefix.")
@click.argument("args", nargs=-1, metavar="KEY_OR_PREFIX")
@with_client
async def delete(client: Client, args: tuple[str, ...], cas: bool, modify_index: int, recurse: bool) -> None:
    """Remove KEY, or every key under a prefix with -recurse."""
    key = _key_arg(args, required=not recurse)
    if cas and modify_index == 0:
        raise Usage("Cannot delete a key that does not exist. Provide a -modify-index greater than 0.")
    if modify_index and not cas:
        raise Usage("Cannot specify -modify-index without -cas!")
    if recurse and cas:
        raise Usage("Cannot specify both -cas and -recurse!")

    if recurse:
        with failing_with(f"Error! Did not delete prefix {key}"):
            await client.kv_delete(key, recurse=True)
        out(f"Success! Deleted keys with prefix: {key}")
        return
    with failing_with(f"Error! Did not delete key {key}" if cas else f"Error deleting key {key}"):
        if not await client.kv_delete(key, cas=modify_index if cas else None):
            raise Fail(f"Error! Did not delete key {key}: CAS failed")
    out(f"Success! Deleted key: {key}")


@kv.command("export")
@click.argument("args", nargs=-1, metavar="[KEY_OR_PREFIX]")
@with_client
async def export(client: Client, args: tuple[str, ...]) -> None:
    """Print the keys under a prefix as JSON, for `kv import`."""
    prefix = _key_arg(args, required=False)
    with failing_with("Error querying agent"):
        pairs = (await client.kv_list(prefix)).value
    entries = [{"key": p["Key"], "flags": p.get("Flags", 0), "value": p.get("Value") or ""} for p in pairs]
    out(json.dumps(entries, indent="\t", ensure_ascii=False))


def _path_join(*parts: str) -> str:
    """Go's path.Join, which Consul applies to imported keys: join non-empty parts, then clean."""
    joined = "/".join(p for p in parts if p)
    if not joined:
        return ""
    cleaned = posixpath.normpath(joined)
    # POSIX keeps exactly two leading slashes; Go collapses them like any others.
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _parse_entries(data: bytes, prefix: str) -> list[tuple[str, int, bytes]]:
    """Every (key, flags, value) to write, all checked before the first write so bad input writes nothing."""
    try:
        entries = json.loads(data)
    except ValueError as exc:
        raise Fail(f"Cannot unmarshal data: {exc}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise Fail('Cannot unmarshal data: expected a JSON array of {"key", "flags", "value"} objects')
    parsed = []
    for raw in entries:
        # Consul decodes these with Go's case-insensitive field matching.
        entry = {str(k).lower(): v for k, v in raw.items()}
        name, flags, value = entry.get("key", ""), entry.get("flags", 0), entry.get("value") or ""
        if not isinstance(name, str) or not isinstance(flags, int) or not 0 <= flags < 2**64:
            raise Fail(f"Cannot unmarshal data: bad key or flags in {json.dumps(raw)[:200]}")
        try:
            decoded = b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise Fail(f"Error base 64 decoding value for key {name}: {exc}") from None
        key = _path_join(prefix, name) + ("/" if name.endswith("/") else "")
        parsed.append((key, flags, decoded))
    return parsed


@kv.command("import", context_settings=DATA_ARGS)
@option("prefix", default="", help="Prefix to put in front of every imported key.")
@click.argument("args", nargs=-1, metavar="[@FILE|-|JSON]")
@with_client
async def import_(client: Client, args: tuple[str, ...], prefix: str) -> None:
    """Write the keys of a `kv export` JSON document, from @FILE, stdin (-) or the argument."""
    if not args:
        raise Usage("Error! Missing DATA argument")
    if len(args) > 1:
        raise Usage(f"Too many arguments (expected 1, got {len(args)})")
    if not args[0]:
        raise Usage("Error! Empty DATA argument")
    for key, flags, value in _parse_entries(_read_data(args[0]), prefix):
        with failing_with(f"Error! Failed writing data for key {key}"):
            await client.kv_put(key, value, flags=flags)
        out(f"Imported: {key}")
