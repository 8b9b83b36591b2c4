"""``buoy agent``: Consul's agent flags on top of config files (flags win)."""

from __future__ import annotations

import sys
from typing import Any

import click

from buoy import log
from buoy.config import ConfigError, Sources, build

# Flag name -> Config field; only flags given on the command line override the files.
_SCALARS = {
    "node": "node_name", "datacenter": "datacenter", "data_dir": "data_dir", "bind": "bind_addr",
    "client": "client_addr", "http_port": "http_port", "dns_port": "dns_port", "server_port": "server_port",
    "encrypt": "encrypt", "bootstrap_expect": "bootstrap_expect", "log_level": "log_level", "domain": "domain",
    "alt_domain": "alt_domain",
}


def _opt(name: str, **kw: Any) -> Any:
    return click.option(f"-{name}", f"--{name}", name.replace("-", "_"), **kw)


@click.command(context_settings={"help_option_names": ["-h", "-help", "--help"]})
@_opt("dev", is_flag=True, help="One in-memory server on loopback, for trying Buoy.")
@_opt("server", is_flag=True, default=None, help="Run as a server (Raft member).")
@_opt("bootstrap-expect", type=int, help="Servers to wait for before forming the cluster.")
@_opt("retry-join", multiple=True, help="host[:port] of another server's HTTP API; repeatable.")
@_opt("join", multiple=True, help="Alias of -retry-join.")
@_opt("node", help="Node name (default: hostname).")
@_opt("datacenter", help="Datacenter name (default dc1).")
@_opt("data-dir", help="Where Raft's journal and snapshots live.")
@_opt("bind", help="Address for cluster traffic (Raft).")
@_opt("client", help="Address(es) for the HTTP and DNS interfaces, space-separated.")
@_opt("http-port", type=int, help="HTTP API port (8500).")
@_opt("dns-port", type=int, help="DNS port (8600; -1 disables).")
@_opt("server-port", type=int, help="Raft port (8300).")
@_opt("encrypt", help="Cluster key from `buoy keygen`; required for a server outside -dev.")
@_opt("config-file", multiple=True, help="JSON or HCL config file; repeatable.")
@_opt("config-dir", multiple=True, help="Directory of *.json / *.hcl config files; repeatable.")
@_opt("domain", help="DNS domain (consul.).")
@_opt("alt-domain", help="A second DNS domain answered like -domain.")
@_opt("recursor", multiple=True, help="IP[:port] of an upstream DNS server for other names; repeatable.")
@_opt("log-level", help="trace, debug, info, warn or error.")
@_opt("log-json", is_flag=True, default=None, help="Log one JSON object per line.")
def agent(**flags: Any) -> None:
    """Run a Buoy agent (server with -server or -dev)."""
    overrides = {name: flags[flag] for flag, name in _SCALARS.items() if flags[flag] is not None}
    overrides.update({name: True for name in ("server", "log_json") if flags[name]})
    if flags["retry_join"] or flags["join"]:
        overrides["retry_join"] = [*flags["retry_join"], *flags["join"]]
    if flags["recursor"]:
        overrides["recursors"] = list(flags["recursor"])
    sources = Sources(dev=flags["dev"], files=flags["config_file"], dirs=flags["config_dir"], flags=overrides)
    from buoy.process import run_agent

    try:
        cfg = build(sources)
        log.setup(cfg.log_level, cfg.log_json)
        run_agent(cfg)  # raises ConfigError when the config files' services and checks cannot be registered
    except ConfigError as e:
        click.echo(f"==> Error: {e}", err=True)
        sys.exit(1)
