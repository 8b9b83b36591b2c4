"""Bad input gets Consul's status code and a one-line plain-text reason, and changes nothing."""

from __future__ import annotations

import socket

import pytest
import requests


def _index(base: str) -> int:
    return int(requests.get(f"{base}/v1/kv/bad-input-probe", timeout=5).headers["X-Consul-Index"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "text"),
    [
        ("PUT", "/v1/catalog/register", b"{not json", 400, "Request decode failed"),
        ("PUT", "/v1/catalog/register", b'{"Node": 5, "Address": "1.2.3.4"}', 400, "Node: expected a string"),
        ("PUT", "/v1/catalog/register", b'{"Address": "1.2.3.4"}', 400, "Missing node name"),
        ("PUT", "/v1/catalog/register", b'{"Node": "n", "Address": "a", "Bogus": 1}', 400, "unknown field"),
        ("PUT", "/v1/catalog/register", b'{"Node": "n", "Address": "a", "Service": {"Port": 1}}', 400,
         "Missing service name"),
        ("PUT", "/v1/catalog/register",
         b'{"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": 70000}}', 400, "port"),
        ("PUT", "/v1/catalog/register", b'{"Node": "n", "Address": "a", "Check": {"Name": "c", "Status": "ok"}}',
         400, "Invalid check status"),
        ("PUT", "/v1/catalog/register", b"[1, 2]", 400, "expected a JSON object"),
        ("PUT", "/v1/catalog/register",
         b'{"Node": "half-reg", "Address": "a", "Check": {"Name": "c", "ServiceID": "nope"}}', 500,
         "Unknown service ID"),
        ("PUT", "/v1/catalog/deregister", b"{}", 400, "Missing node name"),
        ("PUT", "/v1/session/create", b'{"TTL": "5s"}', 500, "Invalid Session TTL"),
        ("PUT", "/v1/session/create", b'{"TTL": "soon"}', 400, "invalid duration"),
        ("PUT", "/v1/session/create", b'{"Behavior": "explode"}', 500, "Invalid Behavior"),
        ("PUT", "/v1/session/create", b'{"LockDelay": "2m"}', 500, "Lock delay"),
        ("PUT", "/v1/session/create", b'{"Name": ["x"]}', 400, "Name: expected a string"),
        ("PUT", "/v1/txn", b"{", 400, "Failed to parse body"),
        # Nesting deeper than the decoder follows: Go's words, not an internal error with a traceback.
        ("PUT", "/v1/catalog/register", b"[" * 100_000 + b"]" * 100_000, 400, "exceeded max depth"),
        ("PUT", "/v1/txn", b"[" * 100_000 + b"]" * 100_000, 400, "exceeded max depth"),
        ("PUT", "/v1/txn", b'[{"KV": {"Verb": "explode", "Key": "k"}}]', 400, "unknown verb"),
        ("PUT", "/v1/txn", b'[{"KV": {"Verb": "set", "Key": "k", "Value": "***"}}]', 400, "base64"),
        ("PUT", "/v1/kv/", b"x", 400, "Missing key name"),
        ("GET", "/v1/kv/", None, 400, "Missing key name"),
        ("PUT", "/v1/kv//leading", b"x", 400, "must not begin with '/'"),
        ("PUT", "/v1/kv/k?cas=1&acquire=abc", b"x", 400, "Conflicting flags"),
        ("PUT", "/v1/kv/k?flags=-1", b"x", 400, "Invalid flags"),
        ("PUT", "/v1/kv/k?cas=abc", b"x", 400, "Invalid cas"),
        ("DELETE", "/v1/kv/k?recurse&cas=3", None, 400, "Conflicting flags"),
        ("GET", "/v1/kv/k?index=abc", None, 400, "Invalid index"),
        ("GET", "/v1/kv/k?index=1&wait=forever", None, 400, "Invalid wait time"),
        ("GET", "/v1/kv/k?stale&consistent", None, 400, "Cannot specify ?stale with ?consistent"),
        ("GET", "/v1/health/service/x?passing=maybe", None, 400, "Invalid value for ?passing"),
        ("GET", "/v1/catalog/nodes?node-meta=nocolon", None, 400, "node-meta"),
        ("DELETE", "/v1/catalog/register", None, 405, "method DELETE not allowed"),
        ("PUT", "/v1/session/renew/", None, 400, "Missing session"),
        ("GET", "/v1/kv/k?dc=elsewhere", None, 500, "No path to datacenter"),
        ("PUT", "/v1/kv/k?dc=elsewhere", b"x", 500, "No path to datacenter"),
    ],
)
def test_bad_request(dev_agent, base, method, path, body, status, text) -> None:
    before = _index(base)
    r = requests.request(method, f"{base}{path}", data=body, timeout=5)
    assert r.status_code == status, r.text
    assert text in r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text.count("\n") <= 1 and "Traceback" not in r.text
    assert _index(base) == before, "a refused request changed the state"
    assert requests.get(f"{base}/v1/catalog/node/half-reg", timeout=5).json() is None


def test_value_over_512k_is_413(dev_agent, base) -> None:
    before = _index(base)
    r = requests.put(f"{base}/v1/kv/too-big", data=b"x" * (512 * 1024 + 1), timeout=10)
    assert r.status_code == 413 and "too large" in r.text
    assert requests.get(f"{base}/v1/kv/too-big", timeout=5).status_code == 404
    assert _index(base) == before
    # The same without a Content-Length (chunked): cut off while reading, nothing stored.
    chunks = (b"x" * 65536 for _ in range(9))
    r = requests.put(f"{base}/v1/kv/too-big-chunked", data=chunks, timeout=10)
    assert r.status_code == 413 and "too large" in r.text
    assert requests.get(f"{base}/v1/kv/too-big-chunked", timeout=5).status_code == 404
    assert _index(base) == before
    ok = requests.put(f"{base}/v1/kv/just-fits", data=b"x" * (512 * 1024), timeout=10)
    assert ok.status_code == 200 and ok.json() is True


def test_cas_on_stale_index_changes_nothing(dev_agent, c) -> None:
    c.kv.put("stale-cas", "v1")
    entry = c.kv.get("stale-cas")[1]
    assert c.kv.put("stale-cas", "v2", cas=entry["ModifyIndex"] + 1000) is False
    assert c.kv.get("stale-cas")[1]["ModifyIndex"] == entry["ModifyIndex"]


def test_405_has_allow_header(dev_agent, base) -> None:
    r = requests.post(f"{base}/v1/status/leader", timeout=5)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


def test_garbage_on_the_http_port_does_not_hurt(dev_agent, base) -> None:
    with socket.create_connection(("127.0.0.1", dev_agent.http_port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\xff garbage that is not HTTP\r\n\r\n")
        s.recv(1024)
    assert requests.get(f"{base}/v1/status/leader", timeout=5).status_code == 200


def test_unsigned_join_is_refused(dev_agent, base) -> None:
    r = requests.get(f"{base}/v1/internal/buoy/peer", timeout=5)
    assert r.status_code == 403
    r = requests.post(f"{base}/v1/internal/buoy/join", json={"raft": "127.0.0.1:1"}, timeout=5,
                      headers={"X-Buoy-Time": "0", "X-Buoy-Signature": "00"})
    assert r.status_code == 403
