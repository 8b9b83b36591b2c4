"""The mesh CA's replicated state: the cluster ID (and so the trust domain), the CA configuration, the
roots (Consul's ``CARoot`` rows) and the private key of the active root.

The key is replicated through Raft among the servers, as Consul's built-in provider does; it lives only
here, never in a read the HTTP API answers. Commands carry everything they store (keys and certificates
are made by the proposer), so applying one is deterministic.
"""

from __future__ import annotations

from typing import Any

from buoy.core.errors import Failed

# Consul's answer when a configuration change lost a race with another one.
RACED = "could not atomically update roots and config"


class CATable:
    def __init__(self) -> None:
        self.cluster_id = ""
        self.config: dict[str, Any] | None = None  # {Provider, Config, ForceWithoutCrossSigning, indexes}
        self.roots: list[dict[str, Any]] = []  # oldest first; exactly one is Active once initialized
        self.signing_key = ""  # PEM of the active root's private key
        self.index = 0  # the roots' index, for blocking reads of /v1/connect/ca/roots

    @property
    def trust_domain(self) -> str:
        return f"{self.cluster_id}.consul" if self.cluster_id else ""

    def active(self) -> dict[str, Any] | None:
        return next((r for r in self.roots if r["Active"]), None)

    def initialize(self, cluster_id: str, config: dict[str, Any], root: dict[str, Any], key: str,
                   index: int) -> bool:
        """The first root. A second leader racing the first finds it already there and changes nothing."""
        if self.active() is not None:
            return False
        self.cluster_id = self.cluster_id or cluster_id
        self.config = dict(config, CreateIndex=index, ModifyIndex=index)
        self.roots = [*self.roots, dict(root, CreateIndex=index, ModifyIndex=index)]
        self.signing_key = key
        self.index = index
        return True

    def configure(self, expect: int, config: dict[str, Any], root: dict[str, Any] | None, key: str | None,
                  index: int, now: float) -> bool:
        """A new configuration and, when it changes the root, the new active root and its key.

        ``expect`` is the configuration's ModifyIndex the proposer read: a change made in between
        (another server's PUT) refuses this one rather than overwrite it.
        """
        if self.config is None or self.config["ModifyIndex"] != expect:
            raise Failed(RACED)
        self.config = dict(config, CreateIndex=self.config["CreateIndex"], ModifyIndex=index)
        if root:
            # New rows and a new list, never a change in place: readers encode what they picked after the lock.
            self.roots = [dict(row, Active=False, RotatedOutAt=now, ModifyIndex=index) if row["Active"] else row
                          for row in self.roots] + [dict(root, CreateIndex=index, ModifyIndex=index)]
            self.signing_key = key or ""
            self.index = index
        return True

    def prune(self, ids: list[str], index: int) -> bool:
        """Forget rotated-out roots (the leader picks those whose leaves have all expired)."""
        kept = [r for r in self.roots if r["Active"] or r["ID"] not in ids]
        if len(kept) == len(self.roots):
            return False
        self.roots = kept
        self.index = index
        return True

    def dump(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id, "config": self.config, "roots": self.roots,
                "signing_key": self.signing_key, "index": self.index}

    def load(self, data: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.cluster_id = data.get("cluster_id", "")
        self.config = data.get("config")
        self.roots = list(data.get("roots", []))
        self.signing_key = data.get("signing_key", "")
        self.index = data.get("index", 0)
