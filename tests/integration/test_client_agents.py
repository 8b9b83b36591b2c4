"""Client agents (no -server) against a real 3-server cluster on loopback: joining, forwarding,
membership and failure detection by heartbeats, leave/force-leave/join, failover between servers, and
repair after the servers lose their data."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import consul
import pytest

from tests.integration.cluster import Cluster
from tests.integration.conftest import Run, wait_until

HEARTBEAT_TTL = 2.0
RECONNECT = 8.0


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, config={"heartbeat_ttl": f"{HEARTBEAT_TTL}s", "reconnect_timeout": f"{RECONNECT}s"})
    c.start_all()
    try:
        c.wait_leader()
        wait_until(lambda: members(c, 0) == {f"s{i}": ("consul", 1) for i in range(3)}, "the servers' heartbeats")
        yield c
    finally:
        c.stop_all()


def api(cluster: Cluster, i: int) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=cluster.http[i], connections_timeout=10)


def get(cluster: Cluster, i: int, path: str) -> Any:
    return cluster.get(i, path)


def members(cluster: Cluster, i: int) -> dict[str, tuple[str, int]]:
    return {m["Name"]: (m["Tags"]["role"], m["Status"]) for m in get(cluster, i, "/v1/agent/members")}  # type: ignore[union-attr]


def joined(cluster: Cluster, i: int) -> None:
    """Wait until client i is an alive member with a passing serfHealth."""
    name = cluster.name(i)
    wait_until(lambda: members(cluster, 0).get(name) == ("node", 1), f"{name} to join")
    wait_until(lambda: any(c["CheckID"] == "serfHealth" and c["Status"] == "passing"
                           for c in get(cluster, 0, f"/v1/health/node/{name}")), f"{name}'s serfHealth")


def serf_status(cluster: Cluster, server: int, node: str) -> str | None:
    checks = get(cluster, server, f"/v1/health/node/{node}")
    return next((c["Status"] for c in checks if c["CheckID"] == "serfHealth"), None)  # type: ignore[union-attr]


def test_clients_join_forward_and_share_services(cluster: Cluster, buoy_cli: Callable[..., Run]) -> None:
    a, b = cluster.add_client([0]), cluster.add_client([1])
    joined(cluster, a)
    joined(cluster, b)
    # Every member, seen through a client (which asks the servers) and through a server.
    want = {"s0": ("consul", 1), "s1": ("consul", 1), "s2": ("consul", 1), f"c{a}": ("node", 1), f"c{b}": ("node", 1)}
    assert members(cluster, a) == want
    assert members(cluster, 1) == want
    me = get(cluster, a, "/v1/agent/self")
    assert me["Config"]["Server"] is False and me["Member"]["Tags"]["role"] == "node"

    listing = buoy_cli("members", env={"BUOY_HTTP_ADDR": f"127.0.0.1:{cluster.http[a]}"})
    assert listing.code == 0, listing
    rows = [line.split() for line in listing.lines()[1:]]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("s0", "alive", "server"), ("s1", "alive", "server"), ("s2", "alive", "server"),
        (f"c{a}", "alive", "client"), (f"c{b}", "alive", "client")]
    assert rows[3][1] == f"127.0.0.1:{cluster.http[a]}"

    # A service on client a with a passing TTL check is healthy as seen from client b.
    ca, cb = api(cluster, a), api(cluster, b)
    ca.agent.service.register("web", service_id="web-a", port=8080, check=consul.Check.ttl("10s"))
    ca.agent.check.ttl_pass("service:web-a")
    wait_until(lambda: [n["Service"]["ID"] for n in cb.health.service("web", passing=True)[1]] == ["web-a"],
               "web-a healthy from the other client")
    node = cb.health.service("web")[1][0]["Node"]
    assert node["Node"] == f"c{a}" and node["Address"] == "127.0.0.1"

    # Every other /v1 call goes to the servers: KV, sessions, status.
    assert cb.kv.put("shared/k", "v1")
    assert ca.kv.get("shared/k")[1]["Value"] == b"v1"
    assert cb.status.leader() == get(cluster, 0, "/v1/status/leader")
    assert len(ca.status.peers()) == 3

    # Bad input through a client gets the server's answer, and changes nothing.
    base = f"http://127.0.0.1:{cluster.http[b]}"
    for method, path, body, status in [("PUT", "/v1/catalog/register", b"{not json", 400),
                                       ("PUT", "/v1/kv/shared/big", b"x" * (512 * 1024 + 1), 413),
                                       ("PUT", "/v1/kv/shared/k?cas=abc", b"v2", 400)]:
        req = urllib.request.Request(base + path, data=body, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == status, (path, err.value.read())
    assert ca.kv.get("shared/k")[1]["Value"] == b"v1" and ca.kv.get("shared/big")[1] is None


def test_a_heartbeat_is_not_a_raft_write(cluster: Cluster) -> None:
    a = cluster.add_client([0])
    joined(cluster, a)
    leader = cluster.wait_leader()

    def commit_index() -> int:
        return int(get(cluster, leader, "/v1/agent/self")["Stats"]["raft"]["commit_index"])

    before = commit_index()
    # Several heartbeat periods: the client (and the servers) heartbeat the leader all along.
    c = api(cluster, leader)
    index, _ = c.catalog.nodes()
    c.catalog.nodes(index=index, wait=f"{int(HEARTBEAT_TTL * 2)}s")
    assert commit_index() == before
    assert members(cluster, leader)[f"c{a}"] == ("node", 1)


def test_a_killed_client_fails_then_is_reaped_and_comes_back(cluster: Cluster) -> None:
    a = cluster.add_client([0])
    joined(cluster, a)
    ca = api(cluster, a)
    ca.agent.service.register("api", service_id="api-1", port=9000)
    c0 = api(cluster, 0)
    wait_until(lambda: c0.health.service("api", passing=True)[1], "api-1 healthy")

    cluster.kill(a)  # SIGKILL: no goodbye, only missing heartbeats
    wait_until(lambda: serf_status(cluster, 0, f"c{a}") == "critical", "serfHealth critical", timeout=HEARTBEAT_TTL * 5)
    assert c0.health.service("api", passing=True)[1] == []
    assert [n["Service"]["ID"] for n in c0.health.service("api")[1]] == ["api-1"]  # still listed, critical
    assert members(cluster, 1)[f"c{a}"] == ("node", 4)
    # After reconnect_timeout the node is reaped from the catalog and the member list.
    wait_until(lambda: f"c{a}" not in members(cluster, 0), "the failed node reaped", timeout=RECONNECT * 3)
    assert c0.catalog.node(f"c{a}")[1] is None

    # The same agent restarted (same data dir) rejoins and pushes its persisted services again.
    cluster.start(a, joins=[1], bootstrap=False)
    joined(cluster, a)
    wait_until(lambda: c0.health.service("api", passing=True)[1], "api-1 back after the restart")


def test_leave_force_leave_and_join(cluster: Cluster, buoy_cli: Callable[..., Run]) -> None:
    a, b = cluster.add_client([0]), cluster.add_client([0])
    joined(cluster, a)
    joined(cluster, b)
    api(cluster, a).agent.service.register("gone", port=1)
    wait_until(lambda: api(cluster, 0).catalog.service("gone")[1], "service gone registered")

    left = buoy_cli("leave", env={"BUOY_HTTP_ADDR": f"127.0.0.1:{cluster.http[a]}"})
    assert left.code == 0 and left.out == "Graceful leave complete\n", left
    proc = cluster.procs[a]
    assert proc is not None and proc.wait(timeout=15) == 0
    # Gone from the catalog at once (no failure period), listed as left.
    assert api(cluster, 0).catalog.node(f"c{a}")[1] is None
    assert api(cluster, 0).catalog.service("gone")[1] == []
    assert members(cluster, 0)[f"c{a}"] == ("node", 3)

    on_b = {"BUOY_HTTP_ADDR": f"127.0.0.1:{cluster.http[b]}"}
    buoy_cli("force-leave", "nosuchnode", env=on_b).assert_one_line_error(
        1, "Error force leaving: agent: No node found with name 'nosuchnode'")
    cluster.kill(b)
    wait_until(lambda: serf_status(cluster, 0, f"c{b}") == "critical", "c_b failed", timeout=HEARTBEAT_TTL * 5)
    on_s1 = {"BUOY_HTTP_ADDR": f"127.0.0.1:{cluster.http[1]}"}
    assert buoy_cli("force-leave", f"c{b}", env=on_s1).code == 0
    assert api(cluster, 0).catalog.node(f"c{b}")[1] is None
    assert members(cluster, 0)[f"c{b}"] == ("node", 3)
    assert buoy_cli("force-leave", "-prune", f"c{b}", env=on_s1).code == 0
    assert f"c{b}" not in members(cluster, 0)

    # A client started with no -retry-join joins when told to.
    c = cluster.add_client([])
    on_c = {"BUOY_HTTP_ADDR": f"127.0.0.1:{cluster.http[c]}"}
    wait_until(lambda: get(cluster, c, "/v1/agent/self"), "the lone client to answer")
    bad = buoy_cli("join", f"127.0.0.1:{cluster.http[c]}", env=on_c)  # itself: not a server
    assert bad.code == 1 and bad.stderr.endswith("Failed to join any nodes.\n"), bad
    ok = buoy_cli("join", f"127.0.0.1:{cluster.http[2]}", env=on_c)
    assert ok.code == 0 and ok.out == "Successfully joined cluster by contacting 1 nodes.\n", ok
    joined(cluster, c)


def test_a_client_moves_to_another_server_and_keeps_blocking_queries(cluster: Cluster) -> None:
    a = cluster.add_client([0])
    joined(cluster, a)
    ca = api(cluster, a)
    assert ca.kv.put("failover/k", "before")
    index, _ = ca.kv.get("failover/k")

    answer: dict[str, Any] = {}

    def watch() -> None:
        try:
            answer["result"] = ca.kv.get("failover/k", index=index, wait="30s")
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            answer["error"] = e

    watcher = threading.Thread(target=watch)
    watcher.start()
    # The client sends reads to the server it joined through (which passes them to the leader): kill that
    # one while the query is open.
    wait_until(lambda: sum(_blocking_queries(cluster, i) for i in range(3)), "the blocking query to open")
    cluster.kill(0)
    survivors = [1, 2]
    leader = cluster.wait_leader(among=survivors)
    assert api(cluster, leader).kv.put("failover/k", "after")
    watcher.join(timeout=40)
    assert not watcher.is_alive()
    assert "error" not in answer, answer
    assert answer["result"][1]["Value"] == b"after"
    # Writes and registrations through the client keep working.
    assert ca.kv.put("failover/k2", "x")
    ca.agent.service.register("still", port=2)
    wait_until(lambda: api(cluster, leader).catalog.service("still")[1], "registration after failover")
    assert members(cluster, a)[f"c{a}"] == ("node", 1)


def _blocking_queries(cluster: Cluster, server: int) -> int:
    return int(get(cluster, server, "/v1/agent/self")["Stats"]["buoy"]["blocking_queries"])


def test_a_server_wipe_heals_without_the_operator(cluster: Cluster) -> None:
    a = cluster.add_client([0, 1, 2])
    joined(cluster, a)
    api(cluster, a).agent.service.register("survivor", service_id="survivor-1", port=7)
    wait_until(lambda: api(cluster, 0).catalog.service("survivor")[1], "survivor registered")
    for i in range(3):
        cluster.kill(i)
        shutil.rmtree(cluster.root / f"s{i}")
    cluster.start_all()
    leader = cluster.wait_leader()
    # The new cluster knows nothing; the client's heartbeat re-creates its node and triggers a full sync.
    joined(cluster, a)
    wait_until(lambda: [s["ServiceID"] for s in api(cluster, leader).catalog.service("survivor")[1]] == ["survivor-1"],
               "the service back in the wiped catalog")


def test_bad_key_and_bad_config_are_refused(cluster: Cluster, tmp_path, buoy_cli: Callable[..., Run]) -> None:
    cluster.key, good = "A" * 43 + "=", cluster.key  # a valid key, but not this cluster's
    a = cluster.add_client([0])
    cluster.key = good
    wait_until(lambda: "not signed with this cluster's key" in cluster.log(a).read_text(), "the refusal logged")
    assert f"c{a}" not in members(cluster, 0)
    # Internal calls without a signature change nothing.
    req = urllib.request.Request(f"http://127.0.0.1:{cluster.http[0]}/v1/internal/buoy/leave", method="POST",
                                 data=json.dumps({"node": "s1"}).encode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403
    assert members(cluster, 0)["s1"] == ("consul", 1)
    # A client agent needs a data dir and the key.
    run = buoy_cli("agent", "-retry-join", f"127.0.0.1:{cluster.http[0]}", "-encrypt", good)
    assert run.code == 1 and "data_dir" in run.stderr, run
    run = buoy_cli("agent", "-data-dir", str(tmp_path / "x"))
    assert run.code == 1 and "encrypt" in run.stderr, run


def test_killing_a_client_does_not_disturb_signals(cluster: Cluster) -> None:
    """SIGTERM on a client stops it cleanly (no leave: it fails, as Consul's agent does by default)."""
    a = cluster.add_client([0])
    joined(cluster, a)
    cluster.kill(a, signal.SIGTERM)
    wait_until(lambda: serf_status(cluster, 0, f"c{a}") == "critical", "failed after SIGTERM",
               timeout=HEARTBEAT_TTL * 5)
