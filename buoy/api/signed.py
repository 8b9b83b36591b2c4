"""Calls between Buoy agents over the HTTP port, signed with the cluster key (``-encrypt``) both ways.

Servers use them to form the cluster; client agents use them to heartbeat, leave and keep their node in
the catalog. A host without the key can neither make such a call nor forge an answer to one.

A request's signature covers its method, path, a digest of its body, a timestamp and a random nonce, so a
captured call cannot be sent to another path, with another body, after ``MAX_SKEW`` or a second time (the
receiver's :class:`ReplayGuard` remembers the nonces it has accepted for that long). The answer's signature
covers the request's nonce, so an old answer cannot stand in for a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from buoy.api.client import Client, ClientError

MAX_SKEW = 120.0
TIME_HEADER = "X-Buoy-Time"
NONCE_HEADER = "X-Buoy-Nonce"
SIGNATURE_HEADER = "X-Buoy-Signature"
MAX_REMEMBERED = 100_000  # nonces kept per receiver: far above any cluster's call rate over MAX_SKEW


def _mac(key: bytes, *parts: str | bytes) -> bytes:
    data = b"\n".join(p if isinstance(p, bytes) else p.encode("utf-8", "surrogateescape") for p in parts)
    return hmac.new(key, data, hashlib.sha256).hexdigest().encode()


def _same(expected: bytes, given: str) -> bool:
    # As bytes: compare_digest refuses a str with non-ASCII characters, and a header may hold anything.
    return hmac.compare_digest(expected, given.encode("utf-8", "surrogateescape"))


def _fresh(stamp: str, now: float) -> bool:
    try:
        return abs(now - float(stamp)) <= MAX_SKEW
    except ValueError:
        return False


def request_headers(key: bytes, method: str, path: str, body: bytes) -> dict[str, str]:
    stamp, nonce = f"{time.time():.3f}", secrets.token_hex(16)
    digest = hashlib.sha256(body).hexdigest()
    return {TIME_HEADER: stamp, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: _mac(key, b"request", method.upper(), path, stamp, nonce, digest).decode()}


def answer_headers(key: bytes, nonce: str, body: bytes) -> dict[str, str]:
    stamp = f"{time.time():.3f}"
    digest = hashlib.sha256(body).hexdigest()
    return {TIME_HEADER: stamp, SIGNATURE_HEADER: _mac(key, b"answer", nonce, stamp, digest).decode()}


def verify_answer(key: bytes, nonce: str, headers: Mapping[str, str], body: bytes) -> bool:
    stamp = headers.get(TIME_HEADER, "")
    digest = hashlib.sha256(body).hexdigest()
    return _fresh(stamp, time.time()) and _same(_mac(key, b"answer", nonce, stamp, digest),
                                                headers.get(SIGNATURE_HEADER, ""))


class ReplayGuard:
    """The receiving side: a request is accepted once, while its timestamp is within MAX_SKEW."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}  # nonce -> when it may be forgotten (its request is stale by then)

    def accept(self, key: bytes, method: str, path: str, headers: Mapping[str, str], body: bytes) -> bool:
        stamp, nonce = headers.get(TIME_HEADER, ""), headers.get(NONCE_HEADER, "")
        now = time.time()
        digest = hashlib.sha256(body).hexdigest()
        if not nonce or not _fresh(stamp, now):
            return False
        if not _same(_mac(key, b"request", method.upper(), path, stamp, nonce, digest),
                     headers.get(SIGNATURE_HEADER, "")):
            return False
        if nonce in self._seen:
            return False
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
            if len(self._seen) >= MAX_REMEMBERED:
                return False  # refuse rather than forget a nonce whose request could still be replayed
        self._seen[nonce] = now + 2 * MAX_SKEW
        return True


async def signed_call(client: Client, key: bytes, path: str, payload: dict[str, Any] | None,
                      timeout: float | None = None) -> Any:
    """POST ``payload`` (GET when None) to ``path``; the answer must be signed too. Returns its JSON."""
    body = json.dumps(payload).encode() if payload is not None else b""
    method = "POST" if payload is not None else "GET"
    headers = request_headers(key, method, path, body)
    resp = await client.request(method, path, data=body, headers=headers, timeout=timeout)
    if not verify_answer(key, headers[NONCE_HEADER], resp.headers, resp.body):
        raise ClientError(f"{client.addr}: the answer is not signed with this cluster's key")
    return json.loads(resp.body)
