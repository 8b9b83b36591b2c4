"""KV semantics through py-consul and raw HTTP against `buoy agent -dev`."""

from __future__ import annotations

import base64
import threading
import time

import consul
import requests


def test_put_get_recurse_keys(dev_agent, c) -> None:
    assert c.kv.put("kv1/a", "1") is True
    assert c.kv.put("kv1/b/c", "2", flags=42) is True
    _, entry = c.kv.get("kv1/b/c")
    assert entry["Value"] == b"2" and entry["Flags"] == 42 and entry["LockIndex"] == 0
    _, entries = c.kv.get("kv1/", recurse=True)
    assert [e["Key"] for e in entries] == ["kv1/a", "kv1/b/c"]
    _, keys = c.kv.get("kv1/", keys=True, separator="/")
    assert keys == ["kv1/a", "kv1/b/"]
    _, keys = c.kv.get("kv1/", keys=True)
    assert keys == ["kv1/a", "kv1/b/c"]


def test_missing_key_is_404_with_index(dev_agent, base) -> None:
    r = requests.get(f"{base}/v1/kv/kv2/none", timeout=5)
    assert r.status_code == 404 and r.text == ""
    assert int(r.headers["X-Consul-Index"]) >= 1
    assert r.headers["X-Consul-KnownLeader"] == "true"


def test_raw_and_empty_value(dev_agent, c, base) -> None:
    c.kv.put("kv3/raw", b"\x00\x01bytes")
    r = requests.get(f"{base}/v1/kv/kv3/raw?raw", timeout=5)
    assert r.content == b"\x00\x01bytes" and r.headers["Content-Type"].startswith("text/plain")
    c.kv.put("kv3/empty", "")
    r = requests.get(f"{base}/v1/kv/kv3/empty", timeout=5)
    assert r.json()[0]["Value"] is None


def test_cas(dev_agent, c) -> None:
    assert c.kv.put("kv4/x", "new", cas=0) is True
    assert c.kv.put("kv4/x", "again", cas=0) is False  # cas=0 only creates
    _, entry = c.kv.get("kv4/x")
    idx = entry["ModifyIndex"]
    assert c.kv.put("kv4/x", "stale", cas=idx - 1) is False
    assert c.kv.put("kv4/x", "fresh", cas=idx) is True
    assert c.kv.get("kv4/x")[1]["Value"] == b"fresh"
    _, entry = c.kv.get("kv4/x")
    assert c.kv.delete("kv4/x", cas=entry["ModifyIndex"] - 1) is False
    assert c.kv.delete("kv4/x", cas=entry["ModifyIndex"]) is True
    assert c.kv.get("kv4/x")[1] is None


def test_delete_recurse(dev_agent, c) -> None:
    for k in ("kv5/a", "kv5/b/c", "kv6"):
        c.kv.put(k, "v")
    assert c.kv.delete("kv5/", recurse=True) is True
    assert c.kv.get("kv5/", recurse=True)[1] is None
    assert c.kv.get("kv6")[1] is not None


def test_blocking_get_wakes_on_change_only(dev_agent, c) -> None:
    c.kv.put("kv7/watched", "0")
    index, _ = c.kv.get("kv7/watched")
    done: dict[str, object] = {}

    def watch() -> None:
        t0 = time.monotonic()
        new_index, entry = c.kv.get("kv7/watched", index=index, wait="20s")
        done.update(elapsed=time.monotonic() - t0, entry=entry, index=new_index)

    t = threading.Thread(target=watch)
    t.start()
    # Unrelated writes, including a sibling key, must not end the wait.
    for i in range(5):
        c.kv.put(f"kv7/other{i}", "x")
        c.kv.put("kv7-unrelated", str(i))
    time.sleep(0.3)
    assert t.is_alive(), "a write to another key woke the blocking query"
    c.kv.put("kv7/watched", "1")
    t.join(10)
    assert not t.is_alive()
    assert done["entry"]["Value"] == b"1" and int(done["index"]) > int(index)


def test_blocking_prefix_wakes_on_delete(dev_agent, c) -> None:
    c.kv.put("kv8/a", "1")
    c.kv.put("kv8/b", "1")
    index, _ = c.kv.get("kv8/", recurse=True)
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(r=c.kv.get("kv8/", recurse=True, index=index, wait="20s")))
    t.start()
    c.kv.put("kv9/elsewhere", "1")
    time.sleep(0.3)
    assert t.is_alive()
    c.kv.delete("kv8/b")
    t.join(10)
    new_index, entries = result["r"]
    assert int(new_index) > int(index) and [e["Key"] for e in entries] == ["kv8/a"]


def test_blocking_wait_times_out(dev_agent, c) -> None:
    c.kv.put("kv10", "x")
    index, _ = c.kv.get("kv10")
    t0 = time.monotonic()
    new_index, _ = c.kv.get("kv10", index=index, wait="1s")
    elapsed = time.monotonic() - t0
    assert new_index == index
    assert 0.9 <= elapsed < 5  # wait plus at most wait/16 jitter, with room for a slow machine


def test_txn_commits_or_rolls_back(dev_agent, base, c) -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    ok = requests.put(f"{base}/v1/txn", json=[
        {"KV": {"Verb": "set", "Key": "kv11/a", "Value": b64("1")}},
        {"KV": {"Verb": "set", "Key": "kv11/b", "Value": b64("2")}},
        {"KV": {"Verb": "get", "Key": "kv11/a"}},
    ], timeout=5)
    assert ok.status_code == 200
    body = ok.json()
    assert body["Errors"] is None and len(body["Results"]) == 3
    assert body["Results"][0]["KV"]["Value"] is None and body["Results"][2]["KV"]["Value"] == b64("1")
    index = c.kv.get("kv11/a")[1]["ModifyIndex"]
    bad = requests.put(f"{base}/v1/txn", json=[
        {"KV": {"Verb": "set", "Key": "kv11/c", "Value": b64("3")}},
        {"KV": {"Verb": "cas", "Key": "kv11/a", "Value": b64("9"), "Index": index + 100}},
    ], timeout=5)
    assert bad.status_code == 409
    errors = bad.json()["Errors"]
    assert errors[0]["OpIndex"] == 1 and "stale" in errors[0]["What"]
    assert c.kv.get("kv11/c")[1] is None  # the first op was rolled back
    assert c.kv.get("kv11/a")[1]["Value"] == b"1"


def test_case_insensitive_txn_fields(dev_agent, base) -> None:
    r = requests.put(f"{base}/v1/txn", json=[{"kv": {"verb": "set", "key": "kv12", "value": "eA=="}}], timeout=5)
    assert r.status_code == 200


def test_py_consul_client_sees_consul_api(c: consul.Consul) -> None:
    assert c.status.leader()
    assert c.catalog.datacenters() == ["dc1"]
