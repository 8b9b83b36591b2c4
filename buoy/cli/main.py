"""The `buoy` command: one click group, one module per command group, and one place that turns
every failure into a single line on stderr and an exit status (0 ok, 1 error, 2 bad usage)."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import click

from buoy import __version__
from buoy.api.client import ClientError, InvalidAddress
from buoy.cli.errors import EXIT_ERROR, EXIT_USAGE, Fail, describe
from buoy.cli.flags import CONTEXT_SETTINGS
from buoy.cli.output import err

# click >= 8.2 reports a bare `buoy` as this UsageError; older releases print help and exit instead.
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


# Each command group lives in its own module, imported only when that command runs: `buoy kv get` should
# not pay for the agent's configuration parsers at every start.
COMMANDS = {
    "agent": "buoy.cli.agent:agent",
    "catalog": "buoy.cli.catalog:catalog",
    "connect": "buoy.cli.connect:connect",
    "force-leave": "buoy.cli.membership:force_leave",
    "intention": "buoy.cli.intention:intention",
    "join": "buoy.cli.membership:join",
    "keygen": "buoy.cli.keygen:keygen",
    "kv": "buoy.cli.kv:kv",
    "leave": "buoy.cli.membership:leave",
    "lock": "buoy.cli.lock:lock",
    "members": "buoy.cli.members:members",
    "operator": "buoy.cli.operator:operator",
    "reload": "buoy.cli.reload:reload",
    "services": "buoy.cli.services:services",
    "validate": "buoy.cli.validate:validate",
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attr = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-version", "--version", prog_name="buoy", message="Buoy v%(version)s")
def cli() -> None:
    """Buoy: service discovery, configuration and mesh networking that speaks Consul's protocols."""


def _usage_line(exc: click.UsageError, message: str) -> str:
    where = exc.ctx.command_path if exc.ctx else "buoy"
    return f"Error: {message.rstrip('.')}. See '{where} -help'."


def _unknown_option(exc: click.NoSuchOption, argv: Sequence[str]) -> str:
    """Name the unknown flag as typed.

    click retries an unknown single-dash word as bundled one-letter flags, so `-recurce` is reported as
    `-r`; Consul's flags are single-dash words, so find the word and suggest the nearest real flag.
    """
    name = exc.option_name
    if len(name) == 2 and name[0] == "-" and name[1] != "-":
        name = next((a.split("=", 1)[0] for a in argv if a.startswith(name) and len(a) > 2), name)
    known = [o for p in (exc.ctx.command.params if exc.ctx else []) for o in p.opts if o.startswith("-")]
    near = difflib.get_close_matches(
        name, [o for o in known if o.startswith("--") == name.startswith("--")], n=1
    )
    return f"No such option: {name}" + (f" (did you mean {near[0]}?)" if near else "")


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status; never lets a traceback out."""
    try:
        result = cli.main(args=None if argv is None else list(argv), prog_name="buoy", standalone_mode=False)
    except _NO_ARGS as exc:
        err(exc.format_message())
        return EXIT_USAGE
    except click.NoSuchOption as exc:
        err(_usage_line(exc, _unknown_option(exc, sys.argv[1:] if argv is None else argv)))
        return EXIT_USAGE
    except click.UsageError as exc:
        err(_usage_line(exc, exc.format_message()))
        return EXIT_USAGE
    except click.ClickException as exc:
        err(f"Error: {exc.format_message()}")
        return exc.exit_code
    except click.Abort:
        err("Interrupted.")
        return 130
    except Fail as exc:
        if exc.message:
            err(exc.message)
        return exc.code
    except InvalidAddress as exc:
        err(f"Error: {exc}")
        return EXIT_USAGE
    except ClientError as exc:
        err(describe(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        err("Interrupted.")
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter's final flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        err(f"Error: unexpected {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
