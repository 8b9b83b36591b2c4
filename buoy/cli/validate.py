"""`buoy validate`: read config files and directories exactly as `buoy agent` would, without starting it."""

from __future__ import annotations

from pathlib import Path

import click

from buoy.cli.errors import Fail, Usage
from buoy.cli.flags import CONTEXT_SETTINGS, ConsulCommand, option
from buoy.cli.output import out
from buoy.config import ConfigError, Sources, build


@click.command(cls=ConsulCommand, context_settings=CONTEXT_SETTINGS)
@option("quiet", is_flag=True, help="When given, a successful run will produce no output.")
@click.argument("paths", nargs=-1, metavar="FILE_OR_DIRECTORY...")
def validate(paths: tuple[str, ...], quiet: bool) -> None:
    """Check config files and directories; exit 0 if the configuration is valid, 1 if not."""
    if not paths:
        raise Usage("Must specify at least one config file or directory")
    dirs = tuple(p for p in paths if Path(p).is_dir())
    try:
        build(Sources(files=tuple(p for p in paths if p not in dirs), dirs=dirs))
    except ConfigError as e:
        raise Fail(f"Config validation failed: {e}") from None
    if not quiet:
        out("Configuration is valid!")
