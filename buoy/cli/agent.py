"""`buoy agent`: placeholder until the agent process lands."""

import click


@click.command(context_settings={"ignore_unknown_options": True})
def agent() -> None:
    """Run a Buoy agent."""
    raise SystemExit("not yet")
