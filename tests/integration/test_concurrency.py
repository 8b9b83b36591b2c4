"""Reads never see half a write: transactions that set two keys together, read back concurrently."""

from __future__ import annotations

import base64
import threading

import requests


def test_readers_never_see_a_half_applied_transaction(dev_agent, base) -> None:
    stop = threading.Event()
    torn: list[tuple[str, str]] = []
    reads = [0]

    def writer(w: int) -> None:
        session = requests.Session()
        for n in range(150):
            value = base64.b64encode(f"{w}-{n}".encode()).decode()
            r = session.put(f"{base}/v1/txn", json=[
                {"KV": {"Verb": "set", "Key": "pair/a", "Value": value}},
                {"KV": {"Verb": "set", "Key": "pair/b", "Value": value}},
            ], timeout=10)
            assert r.status_code == 200

    def reader() -> None:
        session = requests.Session()
        while not stop.is_set() and reads[0] < 20000:
            r = session.get(f"{base}/v1/kv/pair/?recurse", timeout=10)
            if r.status_code == 200:
                entries = r.json()
                if len(entries) == 2 and entries[0]["Value"] != entries[1]["Value"]:
                    torn.append((entries[0]["Value"], entries[1]["Value"]))
                reads[0] += 1

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(120)
    stop.set()
    for t in readers:
        t.join(30)
    assert reads[0] > 100
    assert not torn, f"{len(torn)} torn reads, e.g. {torn[:3]}"
