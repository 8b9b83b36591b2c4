"""One object holds every agent setting with its default (Consul's names and defaults).

Settings come from config files (JSON or HCL, snake_case keys as Consul's), then from command-line flags,
which win. A file with an unknown key or a value of the wrong type is refused with the file and key named.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting that cannot be used; the message names the source and the key."""


@dataclass
class Config:
    dev: bool = False
    server: bool = False
    bootstrap_expect: int = 0
    retry_join: list[str] = field(default_factory=list)
    node_name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    datacenter: str = "dc1"
    data_dir: str | None = None
    bind_addr: str = "0.0.0.0"
    client_addr: str = "127.0.0.1"
    http_port: int = 8500
    dns_port: int = 8600
    server_port: int = 8300
    encrypt: str | None = None
    domain: str = "consul."
    log_level: str = "INFO"
    log_json: bool = False
    kv_max_value_size: int = 524288
    txn_max_req_len: int = 524288
    default_query_time: float = 300.0
    max_query_time: float = 600.0
    ae_interval: float = 60.0  # seconds between full anti-entropy syncs (before jitter)

    @property
    def advertise_addr(self) -> str:
        """The address peers reach this agent on: the bind address unless that is a wildcard."""
        if self.bind_addr in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return self.bind_addr

    @property
    def raft_addr(self) -> str:
        return f"{self.advertise_addr}:{self.server_port}"

    @property
    def http_addr(self) -> str:
        host = self.client_addr if self.client_addr not in ("0.0.0.0", "::") else self.advertise_addr
        return f"{host}:{self.http_port}"

    def cluster_key(self) -> bytes:
        """The decoded ``encrypt`` key (32 random bytes, base64, from ``buoy keygen``)."""
        if not self.encrypt:
            raise ConfigError("encrypt: a cluster key is required (create one with `buoy keygen`)")
        try:
            key = base64.b64decode(self.encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("encrypt: the key is not valid base64 (create one with `buoy keygen`)") from None
        if len(key) not in (16, 24, 32):
            raise ConfigError(f"encrypt: the key must decode to 16, 24 or 32 bytes, not {len(key)}")
        return key

    def validate(self) -> None:
        if self.dev:
            return
        if self.server:
            if not self.data_dir:
                raise ConfigError("data_dir: a server needs -data-dir (or -dev for an in-memory server)")
            self.cluster_key()
        if self.bootstrap_expect < 0:
            raise ConfigError("bootstrap_expect: must be 1 or more")
        if self.bootstrap_expect and not self.server:
            raise ConfigError("bootstrap_expect: only a server (-server) can bootstrap a cluster")
        for name in ("http_port", "server_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name}: {port} is not a TCP port")


# Keys as they appear in Consul's config files, mapped onto Config fields (nested blocks flattened).
_FILE_KEYS: dict[str, str] = {
    "server": "server",
    "bootstrap_expect": "bootstrap_expect",
    "retry_join": "retry_join",
    "start_join": "retry_join",
    "node_name": "node_name",
    "datacenter": "datacenter",
    "data_dir": "data_dir",
    "bind_addr": "bind_addr",
    "client_addr": "client_addr",
    "encrypt": "encrypt",
    "domain": "domain",
    "log_level": "log_level",
    "log_json": "log_json",
    "ports.http": "http_port",
    "ports.dns": "dns_port",
    "ports.server": "server_port",
    "limits.kv_max_value_size": "kv_max_value_size",
    "limits.txn_max_req_len": "txn_max_req_len",
    "ae_interval": "ae_interval",
}
_BLOCKS = {"ports", "limits"}
_TYPES = {f.name: f.type for f in fields(Config)}


def _parse_hcl(text: str) -> Any:
    # Imported here: python-hcl2 builds its grammar at import (about 80 ms), which -dev should not pay.
    import hcl2
    from hcl2.utils import SerializationOptions

    return hcl2.loads(text, serialization_options=SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True))


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        data = _parse_hcl(text) if path.suffix == ".hcl" else json.loads(text)
    except Exception as e:  # both parsers raise several exception types for bad syntax
        raise ConfigError(f"{path}: cannot parse: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    return data


def _coerce(source: str, key: str, name: str, value: Any) -> Any:
    kind = str(_TYPES[name])
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "str | None": isinstance(value, str),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind, True)
    if not ok:
        raise ConfigError(f"{source}: {key}: expected {kind.replace(' | None', '')}, got {type(value).__name__}")
    return value


def apply_file(cfg: Config, path: Path) -> None:
    """Merge one config file into ``cfg`` (lists append, as Consul's config merge does)."""
    data = _read_file(path)
    for key, value in data.items():
        if key in _BLOCKS:
            if isinstance(value, list) and len(value) == 1:
                value = value[0]  # an HCL block parses as a one-element list
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key}: expected an object")
            items = [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            items = [(key, value)]
        for dotted, v in items:
            name = _FILE_KEYS.get(dotted)
            if name is None:
                raise ConfigError(f"{path}: unknown key {dotted!r}")
            v = _coerce(str(path), dotted, name, v)
            if name == "retry_join":
                cfg.retry_join.extend(v)
            else:
                setattr(cfg, name, v)


def load_files(cfg: Config, files: list[str], dirs: list[str]) -> list[Path]:
    """Apply -config-file paths, then every *.json / *.hcl of each -config-dir in lexical order."""
    paths = [Path(f) for f in files]
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise ConfigError(f"{d}: -config-dir is not a directory")
        paths.extend(sorted(x for x in p.iterdir() if x.suffix in (".json", ".hcl") and x.is_file()))
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        apply_file(cfg, path)
    return paths


def dev_defaults(cfg: Config) -> None:
    """What -dev changes before files and flags apply: loopback, a server, in memory, debug logs."""
    cfg.dev = True
    cfg.server = True
    cfg.bind_addr = "127.0.0.1"
    cfg.log_level = "DEBUG"
    cfg.node_name = os.environ.get("BUOY_DEV_NODE", cfg.node_name)
