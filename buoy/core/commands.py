"""The replicated commands: one typed record per op, and the plain-data form the Raft journal keeps.

Proposers build a record (``KVSet(key=..., value=...)``); ``Server.apply`` replicates ``to_wire()``; only
``buoy.server.fsm`` decodes it again (``from_wire``) and applies it. The wire form is a msgpack/JSON-able
dict: ``op``, the format ``v`` and one key per field, named as the field. Entries written before the format
was numbered carry no ``v`` and are format 1, so the key names and defaults below are those of that
format: a journal or snapshot written by an earlier release decodes to the same command.

``ts`` is the proposer's clock, set by ``Server.apply`` when the record leaves it 0; the state machine
takes time only from it, so every server decides lock-delays and tombstones the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform

from buoy.core.errors import Failed

COMMAND_FORMAT = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    op: ClassVar[str]
    _wire_fields: ClassVar[tuple[str, ...]] = ()
    ts: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        # An unset optional field is left out, as proposers of format 1 left it out.
        wire: dict[str, Any] = {"op": self.op, "v": COMMAND_FORMAT}
        for name in self._wire_fields:
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        return wire


C = TypeVar("C", bound=Command)
_DECODERS: dict[str, Callable[[Mapping[str, Any]], Command]] = {}


@dataclass_transform(frozen_default=True, kw_only_default=True)
def command(cls: type[C]) -> type[C]:
    """Declare a replicated command: a frozen, slotted, keyword-only record, decodable by its op."""
    record = dataclass(frozen=True, slots=True, kw_only=True)(cls)
    record._wire_fields = tuple(f.name for f in fields(record))
    _DECODERS[record.op] = _decoder(record)
    return record


def _decoder(cls: type[C]) -> Callable[[Mapping[str, Any]], C]:
    """A function that fills the slots straight from the wire dict, written once per class as dataclasses
    writes ``__init__``: it runs for every applied entry on the Raft thread, where a frozen ``__init__`` or
    a loop over the fields would cost twice as much."""
    env: dict[str, Any] = {"new": object.__new__, "cls": cls}
    lines = ["def decode(w):", "    c = new(cls)"]
    for f in fields(cls):
        env[f"set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's member descriptor
        if f.default is MISSING:
            lines.append(f"    set_{f.name}(c, w[{f.name!r}])")
        else:
            env[f"default_{f.name}"] = f.default
            lines.append(f"    set_{f.name}(c, w.get({f.name!r}, default_{f.name}))")
    lines.append("    return c")
    exec("\n".join(lines), env)
    decode: Callable[[Mapping[str, Any]], C] = env["decode"]
    return decode


def from_wire(wire: Mapping[str, Any]) -> Command:
    """The command a journal entry holds. Raises ``Failed`` for an op or a format this server does not
    know (a newer release proposed it), KeyError when a required field is missing."""
    version = wire.get("v", 1)
    if version != COMMAND_FORMAT:
        raise Failed(f"unsupported command format {version!r} (this server reads format {COMMAND_FORMAT})")
    decode = _DECODERS.get(wire.get("op"))  # type: ignore[arg-type]
    if decode is None:
        raise Failed(f"unknown command {wire.get('op')!r}")
    return decode(wire)


# ---- KV and transactions -------------------------------------------------------------------------------


@command
class KVSet(Command):
    """PUT /v1/kv/<key>: at most one of ``cas``, ``acquire`` and ``release``."""

    op = "kv.set"
    key: str
    value: bytes
    flags: int = 0
    cas: int | None = None
    acquire: str | None = None
    release: str | None = None


@command
class KVDelete(Command):
    op = "kv.delete"
    key: str
    cas: int | None = None


@command
class KVDeleteTree(Command):
    op = "kv.delete_tree"
    prefix: str


@command
class KVReap(Command):
    """Forget tombstones older than ``before`` (unix time), as the leader's reaper decides."""

    op = "kv.reap"
    before: float


@command
class Txn(Command):
    """PUT /v1/txn: Consul's KV TxnOps (``Verb``, ``Key``, ``Value`` as bytes, ``Flags``, ``Index``,
    ``Session``), applied all or nothing."""

    op = "txn"
    ops: list[dict[str, Any]]


# ---- catalog -------------------------------------------------------------------------------------------


@command
class CatalogRegister(Command):
    """A node, and optionally one service and checks, in Consul's RegisterRequest shape."""

    op = "catalog.register"
    reg: dict[str, Any]


@command
class CatalogDeregister(Command):
    """A service (with its checks), else a check, else the whole node."""

    op = "catalog.deregister"
    node: str
    service_id: str = ""
    check_id: str = ""


# ---- sessions and prepared queries ---------------------------------------------------------------------


@command
class SessionCreate(Command):
    """The session row, its ID made by the proposer so every server stores the same one."""

    op = "session.create"
    session: dict[str, Any]


@command
class SessionDestroy(Command):
    op = "session.destroy"
    id: str


@command
class SessionRenew(Command):
    op = "session.renew"
    id: str


@command
class QuerySet(Command):
    op = "query.set"
    query: dict[str, Any]
    update: bool


@command
class QueryDelete(Command):
    op = "query.delete"
    id: str


# ---- intentions ----------------------------------------------------------------------------------------


@command
class IntentionSet(Command):
    """A legacy create or update by ID, or an upsert by name; the proposer made the ID."""

    op = "intention.set"
    mode: Literal["create", "update", "upsert"]
    intention: dict[str, Any]


@command
class IntentionDelete(Command):
    """By ``id`` (legacy API), else by ``source`` and ``destination``."""

    op = "intention.delete"
    id: str = ""
    source: str = ""
    destination: str = ""


# ---- servers and members -------------------------------------------------------------------------------


@command
class ServerRegister(Command):
    op = "server.register"
    raft: str
    node: str
    id: str
    http: str


@command
class MemberAlive(Command):
    """A member row and its node's catalog registration (without service or checks)."""

    op = "member.alive"
    member: dict[str, Any]
    reg: dict[str, Any]


@command
class MemberFailed(Command):
    op = "member.failed"
    node: str


@command
class MemberLeft(Command):
    """A graceful leave or a force-leave; ``prune`` forgets the member too."""

    op = "member.left"
    node: str
    prune: bool = False


@command
class MemberReap(Command):
    op = "member.reap"
    node: str


# ---- the mesh CA ---------------------------------------------------------------------------------------


@command
class CAInit(Command):
    """The first root: the proposer made the key and certificate, so applying only stores them."""

    op = "ca.init"
    cluster_id: str
    config: dict[str, Any]
    root: dict[str, Any]
    key: str


@command
class CAConfigure(Command):
    """A new configuration, refused unless the current one is still at ``expect``; with ``root`` and
    ``key`` when it rotates the root."""

    op = "ca.configure"
    expect: int
    config: dict[str, Any]
    root: dict[str, Any] | None = None
    key: str | None = None


@command
class CAPrune(Command):
    op = "ca.prune"
    ids: list[str]


@command
class Noop(Command):
    """Takes no index and changes nothing."""

    op = "noop"
