"""One object holds every agent setting with its default (Consul's names and defaults).

Settings come from config files (JSON or HCL, snake_case keys as Consul's), then from command-line flags,
which win. A file with an unknown key or a value of the wrong type is refused with the file and key named.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from buoy import __version__, log
from buoy.core.decode import DecodeFailed
from buoy.core.errors import Error
from buoy.core.structs.ca import parse_config
from buoy.core.structs.definitions import ServiceDef, parse_check, parse_service
from buoy.core.structs.member import NodeIdentity
from buoy.durations import parse_duration


class ConfigError(Exception):
    """A setting that cannot be used; the message names the source and the key."""


@dataclass(frozen=True)
class Definition:
    """A service or check definition as a config file holds it, and where: errors name the file and key."""

    source: str  # the file
    key: str  # "service", "services[2]", "check", "checks[0]"
    body: dict[str, Any]


@dataclass(frozen=True)
class Sources:
    """What a Config is built from; the agent keeps it so that a reload rebuilds the Config the same way."""

    dev: bool = False
    files: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    flags: dict[str, Any] = field(default_factory=dict)  # Config field -> value, for flags given on the command line


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
    alt_domain: str = ""
    recursors: list[str] = field(default_factory=list)  # IP or IP:port (53) of upstream resolvers
    # dns_config (Consul's defaults); see docs/configuration.md, "DNS".
    dns_allow_stale: bool = True
    dns_max_stale: float = 87600 * 3600.0
    dns_node_ttl: float = 0.0
    dns_service_ttl: dict[str, float] = field(default_factory=dict)  # name, "prefix*" or "*" -> seconds
    dns_enable_truncate: bool = False
    dns_only_passing: bool = False
    dns_a_record_limit: int = 0
    dns_udp_answer_limit: int = 3
    dns_node_meta_txt: bool = True
    dns_recursor_timeout: float = 2.0
    dns_recursor_strategy: str = "sequential"
    dns_soa_expire: int = 86400
    dns_soa_min_ttl: int = 0
    dns_soa_refresh: int = 3600
    dns_soa_retry: int = 600
    log_level: str = "INFO"
    log_json: bool = False
    kv_max_value_size: int = 524288
    txn_max_req_len: int = 524288
    default_query_time: float = 300.0
    max_query_time: float = 600.0
    ae_interval: float = 60.0  # seconds between full anti-entropy syncs (before jitter)
    enable_local_script_checks: bool = False  # script checks from config files
    enable_script_checks: bool = False  # script checks from the HTTP API too (remote code execution: off)
    heartbeat_ttl: float = 10.0  # a node not heard from for this long is marked failed by the leader
    reconnect_timeout: float = 72 * 3600.0  # a failed node is removed from the catalog after this long
    intentions_default: str = ""  # "allow" or "deny" when no intention matches; unset: allow in -dev, else deny
    # Consul's `connect` block. The mesh is always on; `enabled` is accepted so Consul's files load.
    connect_enabled: bool = True
    connect_ca_provider: str = "consul"
    connect_ca_config: dict[str, Any] = field(default_factory=dict)  # the CA's first configuration
    services: list[Definition] = field(default_factory=list)  # Consul's `service` / `services` keys
    checks: list[Definition] = field(default_factory=list)  # Consul's `check` / `checks` keys
    sources: Sources = field(default_factory=Sources)

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
        first = self.client_addr.split()[0] if self.client_addr.strip() else "127.0.0.1"
        host = first if first not in ("0.0.0.0", "::") else self.advertise_addr
        return f"{host}:{self.http_port}"

    def identity(self, node_id: str) -> NodeIdentity:
        """Who this agent is to the cluster: its member row and its catalog node."""
        return NodeIdentity(self.node_name, node_id, self.advertise_addr, self.http_port, self.datacenter,
                            self.server, self.server_port if self.server else None, __version__)

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
        if self.log_level.upper() not in log.LEVELS:
            raise ConfigError(f"log_level: unknown level {self.log_level!r} (trace, debug, info, warn, error)")
        self._validate_dns()
        if self.connect_ca_provider != "consul":
            raise ConfigError(f"connect.ca_provider: {self.connect_ca_provider!r} is not supported: only the "
                              "built-in \"consul\" provider")
        if self.connect_ca_config:
            try:
                parse_config(self.connect_ca_config)
            except Error as e:
                raise ConfigError(f"connect.ca_config: {e.message}") from None
        if self.intentions_default not in ("", "allow", "deny"):
            raise ConfigError(f"intentions_default: {self.intentions_default!r} is not allow or deny")
        if self.dev:
            return
        if not self.data_dir:
            what = "a server" if self.server else "an agent"
            raise ConfigError(f"data_dir: {what} needs -data-dir (or -dev for an in-memory server)")
        # Servers and client agents sign every call between them with the cluster key.
        self.cluster_key()
        if self.bootstrap_expect < 0:
            raise ConfigError("bootstrap_expect: must be 1 or more")
        if self.bootstrap_expect and not self.server:
            raise ConfigError("bootstrap_expect: only a server (-server) can bootstrap a cluster")
        for name in ("http_port", "server_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name}: {port} is not a TCP port")

    def _validate_dns(self) -> None:
        if self.dns_port != -1 and not 1 <= self.dns_port <= 65535:
            raise ConfigError(f"dns_port: {self.dns_port} is not a port (-1 disables DNS)")
        for name in ("domain", "alt_domain"):
            value = getattr(self, name)
            if (value or name == "domain") and not _DNS_NAME.fullmatch(value.rstrip(".")):
                raise ConfigError(f"{name}: {value!r} is not a DNS name")
        if self.alt_domain and self.alt_domain.rstrip(".").lower() == self.domain.rstrip(".").lower():
            raise ConfigError("alt_domain: must differ from domain")
        for r in self.recursors:
            recursor_address(r)
        for key in ("dns_config.a_record_limit", "dns_config.udp_answer_limit", "dns_config.soa.expire",
                    "dns_config.soa.min_ttl", "dns_config.soa.refresh", "dns_config.soa.retry"):
            if getattr(self, _FILE_KEYS[key]) < 0:
                raise ConfigError(f"{key}: must not be negative")
        if any(ttl < 0 for ttl in self.dns_service_ttl.values()) or self.dns_node_ttl < 0:
            raise ConfigError("dns_config: a TTL must not be negative")
        if self.dns_recursor_strategy not in ("sequential", "random"):
            raise ConfigError(f"dns_config.recursor_strategy: {self.dns_recursor_strategy!r} is not "
                              "sequential or random")


_DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*")


def recursor_address(text: str) -> tuple[str, int]:
    """(ip, port) of a recursor given as Consul takes it: an IP, ``ip:port`` or ``[ipv6]:port`` (port 53)."""
    host, port = text.strip(), 53
    if host.startswith("["):
        host, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"recursors: {text!r} is not an IP address or ip:port")
        port_text = rest[1:]
    elif host.count(":") == 1:
        host, port_text = host.split(":")
    else:
        port_text = ""
    try:
        ipaddress.ip_address(host)
        port = int(port_text) if port_text else port
    except ValueError:
        raise ConfigError(f"recursors: {text!r} is not an IP address or ip:port") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"recursors: {text!r}: {port} is not a port")
    return host, port


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
    "alt_domain": "alt_domain",
    "recursors": "recursors",
    "dns_config.allow_stale": "dns_allow_stale",
    "dns_config.max_stale": "dns_max_stale",
    "dns_config.node_ttl": "dns_node_ttl",
    "dns_config.service_ttl": "dns_service_ttl",
    "dns_config.enable_truncate": "dns_enable_truncate",
    "dns_config.only_passing": "dns_only_passing",
    "dns_config.a_record_limit": "dns_a_record_limit",
    "dns_config.udp_answer_limit": "dns_udp_answer_limit",
    "dns_config.enable_additional_node_meta_txt": "dns_node_meta_txt",
    "dns_config.recursor_timeout": "dns_recursor_timeout",
    "dns_config.recursor_strategy": "dns_recursor_strategy",
    "dns_config.soa.expire": "dns_soa_expire",
    "dns_config.soa.min_ttl": "dns_soa_min_ttl",
    "dns_config.soa.refresh": "dns_soa_refresh",
    "dns_config.soa.retry": "dns_soa_retry",
    "log_level": "log_level",
    "log_json": "log_json",
    "ports.http": "http_port",
    "ports.dns": "dns_port",
    "ports.server": "server_port",
    "limits.kv_max_value_size": "kv_max_value_size",
    "limits.txn_max_req_len": "txn_max_req_len",
    "ae_interval": "ae_interval",
    "enable_local_script_checks": "enable_local_script_checks",
    "enable_script_checks": "enable_script_checks",
    "heartbeat_ttl": "heartbeat_ttl",
    "reconnect_timeout": "reconnect_timeout",
    "intentions_default": "intentions_default",
    "connect.enabled": "connect_enabled",
    "connect.ca_provider": "connect_ca_provider",
    "connect.ca_config": "connect_ca_config",
}
_BLOCKS = {"ports", "limits", "dns_config", "dns_config.soa", "connect"}
_TYPES = {f.name: f.type for f in fields(Config)}
_APPENDED = frozenset({"retry_join", "recursors"})  # lists that every file and the flags add to, as in Consul


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
    if kind == "float" and isinstance(value, str):  # durations are Go strings in Consul's files ("72h")
        try:
            return parse_duration(value)
        except ValueError as e:
            raise ConfigError(f"{source}: {key}: {e}") from None
    if kind == "dict[str, float]":  # a map of durations (dns_config.service_ttl)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected an object, got {type(value).__name__}")
        try:
            return {str(k): parse_duration(v) for k, v in value.items()}
        except ValueError as e:
            raise ConfigError(f"{source}: {key}: {e}") from None
    if kind == "dict[str, Any]":  # an object kept as given (connect.ca_config)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected an object, got {type(value).__name__}")
        return value
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


# Consul's definition fields that hold lists of objects. Anywhere else a list of one object is an HCL block
# (`check { ... }`) standing for the object itself, and Consul's decoder unwraps it; so does _unblock.
_OBJECT_LISTS = frozenset({"checks", "services", "upstreams", "paths"})
_DEFINITION_KEYS = {"service": "services", "services": "services", "check": "checks", "checks": "checks"}


def _unblock(value: Any) -> Any:
    if isinstance(value, list):
        return [_unblock(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if (isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict)
                and str(k).lower().replace("_", "") not in _OBJECT_LISTS):
            v = v[0]
        out[k] = _unblock(v)
    return out


def _definitions(path: Path, key: str, value: Any) -> list[Definition]:
    """The definitions under ``service``, ``services``, ``check`` or ``checks``: one object or a list."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, dict) for v in items):
        raise ConfigError(f"{path}: {key}: expected an object or a list of objects")
    indexed = key in ("services", "checks") or len(items) > 1
    return [Definition(str(path), f"{key}[{i}]" if indexed else key, _unblock(v)) for i, v in enumerate(items)]


def definitions(cfg: Config) -> tuple[list[tuple[dict[str, Any], list[dict[str, Any]], ServiceDef | None]],
                                     list[dict[str, Any]]]:
    """The config files' services (each with its embedded checks and the sidecar it asks for) and checks, as
    the agent keeps them."""

    def located(d: Definition, word: str, e: Error) -> ConfigError:
        # The parsers name what they read "Service" or "Check" ("Service.Port: ..."); name the file's key.
        text = e.detail if isinstance(e, DecodeFailed) else e.message
        rest = text[len(word):] if text.startswith((f"{word}.", f"{word}:")) else f": {text}"
        return ConfigError(f"{d.source}: {d.key}{rest}")

    scripts = cfg.enable_script_checks or cfg.enable_local_script_checks
    services, checks = [], []
    for d in cfg.services:
        try:
            services.append(parse_service(d.body, scripts=scripts))
        except Error as e:
            raise located(d, "Service", e) from None
    for d in cfg.checks:
        try:
            checks.append(parse_check(d.body, "Check", scripts=scripts))
        except Error as e:
            raise located(d, "Check", e) from None
    return services, checks


def apply_file(cfg: Config, path: Path) -> None:
    """Merge one config file into ``cfg`` (lists append, as Consul's config merge does)."""
    data = _read_file(path)
    for key, value in data.items():
        if key in _DEFINITION_KEYS:
            getattr(cfg, _DEFINITION_KEYS[key]).extend(_definitions(path, key, value))
            continue
        for dotted, v in _block_items(path, key, value) if key in _BLOCKS else [(key, value)]:
            name = _FILE_KEYS.get(dotted)
            if name is None:
                raise ConfigError(f"{path}: unknown key {dotted!r}")
            v = _coerce(str(path), dotted, name, v)
            if name in _APPENDED:
                getattr(cfg, name).extend(v)
            else:
                setattr(cfg, name, v)


def _block_items(path: Path, key: str, value: Any) -> list[tuple[str, Any]]:
    """The settings of a block as (dotted key, value), nested blocks (``dns_config { soa {} }``) included."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # an HCL block parses as a one-element list
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key}: expected an object")
    items: list[tuple[str, Any]] = []
    for k, v in value.items():
        dotted = f"{key}.{k}"
        items.extend(_block_items(path, dotted, v) if dotted in _BLOCKS else [(dotted, v)])
    return items


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
    cfg.enable_local_script_checks = True
    cfg.node_name = os.environ.get("BUOY_DEV_NODE", cfg.node_name)


def build(sources: Sources) -> Config:
    """The Config the agent runs with: -dev defaults, then the files, then the flags, validated, definitions
    included. ``buoy agent``, a reload and ``buoy validate`` all build it here, so they agree."""
    cfg = Config(sources=sources)
    if sources.dev:
        dev_defaults(cfg)
    load_files(cfg, list(sources.files), list(sources.dirs))
    for name, value in sources.flags.items():
        if name in _APPENDED:
            getattr(cfg, name).extend(value)
        else:
            setattr(cfg, name, value)
    if cfg.data_dir:
        cfg.data_dir = str(Path(cfg.data_dir).resolve())
    cfg.validate()
    definitions(cfg)
    return cfg
