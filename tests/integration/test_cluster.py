"""A 3-server cluster: writes through any server, leader failure, rejoin, and durability across kill -9
of every server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import consul
import requests

from tests.integration.cluster import Cluster
from tests.integration.conftest import REPO, clean_env


def client(cluster: Cluster, i: int) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=cluster.http[i], connections_timeout=10)


def test_cluster_forms_and_replicates(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    peers = cluster.get(leader, "/v1/status/peers")
    assert sorted(peers) == sorted(f"127.0.0.1:{p}" for p in cluster.raft)
    # A write sent to a follower reaches the leader and every server applies it with the same index.
    assert client(cluster, follower).kv.put("rep/a", "1") is True
    indexes = set()
    for i in range(3):
        _, entry = client(cluster, i).kv.get("rep/a", consistency="consistent" if i == leader else None)
        deadline = time.monotonic() + 5
        while entry is None and time.monotonic() < deadline:
            time.sleep(0.05)
            _, entry = client(cluster, i).kv.get("rep/a", consistency="stale")
        assert entry is not None and entry["Value"] == b"1"
        indexes.add(entry["ModifyIndex"])
    assert len(indexes) == 1
    conf = cluster.get(follower, "/v1/operator/raft/configuration")
    assert sorted(s["Node"] for s in conf["Servers"]) == ["s0", "s1", "s2"]
    assert [s["Leader"] for s in conf["Servers"]].count(True) == 1
    out = subprocess.run([sys.executable, "-m", "buoy", "operator", "raft", "list-peers",
                          "-http-addr", f"127.0.0.1:{cluster.http[follower]}"],
                         capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert "leader" in out.stdout and out.stdout.count("follower") == 2


def test_default_read_on_a_follower_sees_writes_made_elsewhere(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    a, b = [i for i in range(3) if i != leader]
    for n in range(30):
        assert client(cluster, a).kv.put(f"ryw/{n}", str(n)) is True
        _, entry = client(cluster, b).kv.get(f"ryw/{n}")  # default consistency: the leader answers
        assert entry is not None and entry["Value"] == str(n).encode()


def test_blocking_query_on_follower_wakes(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    f = client(cluster, follower)
    f.kv.put("blk/k", "0")
    index, _ = f.kv.get("blk/k")
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(r=f.kv.get("blk/k", index=index, wait="20s")))
    t.start()
    client(cluster, leader).kv.put("blk/other", "x")
    time.sleep(0.3)
    assert t.is_alive()
    client(cluster, leader).kv.put("blk/k", "1")
    t.join(10)
    assert result["r"][1]["Value"] == b"1"


def test_leader_kill_writes_continue_and_old_leader_rejoins(cluster: Cluster) -> None:
    old = cluster.wait_leader()
    client(cluster, old).kv.put("fail/before", "1")
    cluster.kill(old)
    survivors = [i for i in range(3) if i != old]
    new = cluster.wait_leader(survivors)
    assert new != old
    for n in range(20):
        assert client(cluster, survivors[n % 2]).kv.put(f"fail/after/{n}", str(n)) is True
    cluster.start(old)
    cluster.wait_leader()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, keys = client(cluster, old).kv.get("fail/", keys=True, consistency="stale")
        if keys and len(keys) == 21:
            break
        time.sleep(0.1)
    assert keys is not None and len(keys) == 21, keys
    # The restarted server serves writes again, forwarding them to the current leader.
    assert client(cluster, old).kv.put("fail/from-old", "1") is True


def test_every_server_killed_loses_no_acknowledged_write(cluster: Cluster) -> None:
    cluster.wait_leader()
    acked: list[str] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        c = client(cluster, w % 3)
        n = 0
        while not stop.is_set() and n < 5000:
            key = f"dur/{w}/{n}"
            try:
                if c.kv.put(key, "v" * 64) is True:
                    acked.append(key)
            except Exception:
                return  # the server went away mid-request: that write was never acknowledged
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(3):
        cluster.kill(i)
    stop.set()
    for t in threads:
        t.join(15)
    assert len(acked) >= 300
    cluster.start_all()
    leader = cluster.wait_leader()
    _, keys = client(cluster, leader).kv.get("dur/", keys=True, consistency="consistent")
    missing = set(acked) - set(keys or [])
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"


def test_without_quorum_only_stale_reads_answer(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    client(cluster, leader).kv.put("quorum/k", "v")
    survivor = (leader + 1) % 3
    deadline = time.monotonic() + 10
    while client(cluster, survivor).kv.get("quorum/k", consistency="stale")[1] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for i in range(3):
        if i != survivor:
            cluster.kill(i)
    base = f"http://127.0.0.1:{cluster.http[survivor]}"
    deadline = time.monotonic() + 20
    while requests.get(f"{base}/v1/status/leader", timeout=5).json():
        assert time.monotonic() < deadline, "the lone server still believes in a leader"
        time.sleep(0.1)
    r = requests.get(f"{base}/v1/kv/quorum/k", timeout=5)
    assert r.status_code == 500 and "No cluster leader" in r.text
    r = requests.get(f"{base}/v1/kv/quorum/k?stale", timeout=5)
    assert r.status_code == 200 and r.headers["X-Consul-KnownLeader"] == "false"
    assert int(r.headers["X-Consul-LastContact"]) > 0
    w = requests.put(f"{base}/v1/kv/quorum/k", data=b"lost", timeout=30)
    assert w.status_code == 500


def test_a_fourth_server_joins_through_a_follower(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    client(cluster, leader).kv.put("join/before", "1")
    follower = (leader + 1) % 3
    fourth = cluster.add_server(join=follower)
    deadline = time.monotonic() + 30
    want = sorted(f"127.0.0.1:{p}" for p in cluster.raft)
    while sorted(cluster.get(leader, "/v1/status/peers")) != want:
        assert time.monotonic() < deadline, cluster.log(fourth).read_text()[-2000:]
        time.sleep(0.1)
    assert cluster.wait_leader() == leader
    assert client(cluster, fourth).kv.put("join/after", "2") is True
    _, keys = client(cluster, fourth).kv.get("join/", keys=True)
    assert keys == ["join/after", "join/before"]
