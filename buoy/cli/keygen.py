"""`buoy keygen`: make a cluster encryption key."""

from __future__ import annotations

import base64
import secrets

import click

from buoy.cli.flags import CONTEXT_SETTINGS, ConsulCommand
from buoy.cli.output import out

KEY_BYTES = 32


@click.command(cls=ConsulCommand, context_settings=CONTEXT_SETTINGS)
def keygen() -> None:
    """Generate a cluster encryption key.

    Prints 32 random bytes, base64-encoded, for `buoy agent -encrypt`.
    """
    out(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode())
