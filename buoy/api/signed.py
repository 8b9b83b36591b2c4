"""Calls between Buoy agents over the HTTP port, signed with the cluster key (``-encrypt``) both ways.

Servers use them to form the cluster; client agents use them to heartbeat, leave and keep their node in
the catalog. A host without the key can neither make such a call nor forge an answer to one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from buoy.api.client import Client, ClientError

MAX_SKEW = 120.0
TIME_HEADER = "X-Buoy-Time"
SIGNATURE_HEADER = "X-Buoy-Signature"


def sign(key: bytes, stamp: str, body: bytes) -> str:
    return hmac.new(key, stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def verify(key: bytes, stamp: str, body: bytes, signature: str) -> bool:
    try:
        if abs(time.time() - float(stamp)) > MAX_SKEW:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(sign(key, stamp, body), signature)


def signed_headers(key: bytes, body: bytes) -> dict[str, str]:
    stamp = f"{time.time():.3f}"
    return {TIME_HEADER: stamp, SIGNATURE_HEADER: sign(key, stamp, body)}


def verify_headers(key: bytes, headers: Any, body: bytes) -> bool:
    return verify(key, headers.get(TIME_HEADER, ""), body, headers.get(SIGNATURE_HEADER, ""))


async def signed_call(client: Client, key: bytes, path: str, payload: dict[str, Any] | None,
                      timeout: float | None = None) -> Any:
    """POST ``payload`` (GET when None) to ``path``; the answer must be signed too. Returns its JSON."""
    body = json.dumps(payload).encode() if payload is not None else b""
    resp = await client.request("POST" if payload is not None else "GET", path, data=body,
                                headers=signed_headers(key, body), timeout=timeout)
    if not verify_headers(key, resp.headers, resp.body):
        raise ClientError(f"{client.addr}: the answer is not signed with this cluster's key")
    return json.loads(resp.body)
