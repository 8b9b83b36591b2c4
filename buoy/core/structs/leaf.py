"""A leaf certificate as the agent API shows it (Consul's ``IssuedCert``, /v1/agent/connect/ca/leaf/:service),
built from the leader's answer to a CSR, and what the agent reads of the roots (``IndexedCARoots``, as
:func:`buoy.core.structs.ca.roots_to_api` encodes them) to ask for one."""

from __future__ import annotations

from typing import Any


def active_root(roots: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in roots.get("Roots") or () if r["ID"] == roots.get("ActiveRootID")), None)


def active_key_id(roots: dict[str, Any]) -> str:
    """The SigningKeyID of the active root, empty when there is none: what a leaf's issuer is compared with."""
    active = active_root(roots)
    return active["SigningKeyID"] if active else ""


def trust_domain(roots: dict[str, Any]) -> str:
    return str(roots["TrustDomain"])


def key_type(root: dict[str, Any]) -> tuple[str, int]:
    """The root's key type and size, which its leaves use too, as Consul's do."""
    return root["PrivateKeyType"], root["PrivateKeyBits"]


def cert_pem(issued: dict[str, Any]) -> str:
    return str(issued["CertPEM"])


def summary(issued: dict[str, Any]) -> dict[str, str]:
    """What the agent logs of a new leaf."""
    return {"serial": issued["SerialNumber"], "valid_before": issued["ValidBefore"]}


def issued_cert(issued: dict[str, Any], private_key_pem: str, after: int) -> dict[str, Any]:
    """The IssuedCert the agent serves: the leader's answer with the private key only this agent holds. Its
    index is the answer's, moved past ``after`` (the index of the leaf it replaces) so blocking reads wake."""
    index = max(int(issued["ModifyIndex"]), after + 1)
    return {
        "SerialNumber": issued["SerialNumber"], "CertPEM": issued["CertPEM"], "PrivateKeyPEM": private_key_pem,
        "Service": issued["Service"], "ServiceURI": issued["ServiceURI"], "ValidAfter": issued["ValidAfter"],
        "ValidBefore": issued["ValidBefore"], "CreateIndex": index, "ModifyIndex": index,
    }


def index(cert: dict[str, Any]) -> int:
    return int(cert["ModifyIndex"])
