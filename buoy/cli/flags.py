"""Consul-style flags for click commands, and the HTTP flags every agent-calling command shares.

Consul's flags are single-dash words (`-http-addr`); click takes a single-dash name of more than one
letter as a long option, so declaring both spellings gives `-flag`, `--flag`, `-flag=v` and `-flag v`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from buoy import aio
from buoy.api.client import Client, resolve_token
from buoy.durations import parse_duration

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "-help", "--help"], "max_content_width": 100}


# The spellings Go's strconv.ParseBool accepts, which Consul's `-flag=value` takes for boolean flags.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _consul_syntax(command: click.Command, args: list[str], interspersed: bool) -> list[str]:
    """Rewrite the forms of Go's flag package that click reads differently.

    `-flag=true` / `-flag=false` on a boolean flag become `-flag` / its negation (or nothing), and
    `-n=3` on a one-letter option becomes `-n 3` (click would read the value as "=3"). Where arguments
    end the flags (`kv put`, `lock`), nothing after the first argument is touched: it is data.
    """
    booleans: dict[str, tuple[str, str | None]] = {}
    valued: set[str] = set()
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        if param.is_flag or param.count:
            negation = param.secondary_opts[0] if param.secondary_opts else None
            booleans.update((opt, (param.opts[0], negation)) for opt in param.opts)
        else:
            valued.update(param.opts)
    rewritten: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or (not interspersed and (arg == "-" or not arg.startswith("-"))):
            return rewritten + args[i:]
        name, sep, value = arg.partition("=")
        if sep and name in booleans and value in _GO_TRUE | _GO_FALSE:
            on, off = booleans[name]
            rewritten.extend([on] if value in _GO_TRUE else [off] if off else [])
        elif sep and name in valued and len(name) == 2:
            rewritten.extend([name, value])
        elif arg in valued:
            rewritten.extend(args[i : i + 2])  # the flag and its value, whatever the value looks like
            i += 1
        else:
            rewritten.append(arg)
        i += 1
    return rewritten


class ConsulCommand(click.Command):
    """A command that reads its flags the way Consul's Go flag parser does, `-flag=false` included."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, _consul_syntax(self, args, ctx.allow_interspersed_args))
        except click.UsageError as exc:
            # Some of click's parser errors carry no context; the usage hint should name this command.
            exc.ctx = exc.ctx or ctx
            raise


class ConsulGroup(click.Group):
    """A group whose subcommands and subgroups are Consul-style too."""

    command_class = ConsulCommand
    group_class = type


def option(name: str, dest: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """A flag spelled `-name` and `--name`, passed to the command as `dest` (default: `name`, with `_`)."""
    return click.option(f"-{name}", f"--{name}", dest or name.replace("-", "_"), **kwargs)


class KeyValue(click.ParamType):
    """A `key=value` flag value, as Consul's `-node-meta` takes it."""

    name = "key=value"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not of the form key=value", param, ctx)
        return key, val


class Uint64(click.ParamType):
    """An unsigned 64-bit integer, the type of Consul's indexes and KV flags."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if not 0 <= number < 2**64:
            self.fail(f"{value!r} is not an unsigned integer", param, ctx)
        return number


UINT64 = Uint64()


class Duration(click.ParamType):
    """A Go duration ("500ms", "10s", "1h30m") in seconds, the form of Consul's time flags."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration like 500ms, 10s or 1h30m", param, ctx)


DURATION = Duration()

_HTTP_OPTIONS = [
    option(
        "http-addr",
        metavar="ADDR",
        help="Agent HTTP address, host:port or http://host:port "
        "[env: BUOY_HTTP_ADDR, CONSUL_HTTP_ADDR; default 127.0.0.1:8500].",
    ),
    option("token", metavar="TOKEN", help="ACL token [env: BUOY_HTTP_TOKEN, CONSUL_HTTP_TOKEN]."),
    option(
        "token-file",
        metavar="PATH",
        help="File holding the ACL token [env: BUOY_HTTP_TOKEN_FILE, CONSUL_HTTP_TOKEN_FILE].",
    ),
    option("datacenter", metavar="DC", help="Datacenter to query; defaults to the agent's."),
    option("stale", is_flag=True, help="Let any server answer reads, not only the leader."),
]


def with_client(func: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Give a command the shared HTTP flags and run its coroutine with a Client built from them.

    The coroutine gets the client as the keyword argument `client`; it is closed when the command ends,
    whatever happens.
    """

    @functools.wraps(func)
    def command(
        *args: Any,
        http_addr: str | None,
        token: str | None,
        token_file: str | None,
        datacenter: str | None,
        stale: bool,
        **kwargs: Any,
    ) -> Any:
        async def run() -> Any:
            client = Client(
                http_addr,
                resolve_token(token, token_file),
                datacenter=datacenter or None,
                consistency="stale" if stale else "default",
            )
            async with client:
                return await func(*args, client=client, **kwargs)

        return aio.run(run())

    # click lists parameters in reverse order of decoration; this keeps the shared flags in a fixed order
    # after the command's own.
    for decorate in reversed(_HTTP_OPTIONS):
        command = decorate(command)
    return command
