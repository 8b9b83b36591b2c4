"""The `buoy` command line, run as a real process: against a closed port, and against `buoy agent -dev`."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import consul
import pytest
import requests

if TYPE_CHECKING:
    from conftest import DevAgent, Run


Buoy = Callable[..., "Run"]


def unreachable_message(addr: str) -> str:
    return f"Error: cannot reach the agent at {addr} — is `buoy agent` running?"


# -- without an agent ----------------------------------------------------------------------------


@pytest.fixture
def closed_addr(port_picker: Callable[[], int]) -> str:
    return f"127.0.0.1:{port_picker()}"


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (["kv", "get"], ["a"]),
        (["kv", "put"], ["a", "1"]),
        (["kv", "delete"], ["a"]),
        (["kv", "export"], []),
        (["kv", "import"], ['[{"key": "a", "value": ""}]']),
        (["catalog", "datacenters"], []),
        (["catalog", "nodes"], []),
        (["catalog", "services"], []),
        (["members"], []),
        (["operator", "raft", "list-peers"], []),
    ],
)
def test_unreachable_agent_is_one_line_and_exit_1(
    buoy_cli: Buoy, command: list[str], args: list[str], closed_addr: str
) -> None:
    run = buoy_cli(*command, "-http-addr", closed_addr, *args)
    run.assert_one_line_error(1, unreachable_message(closed_addr))


@pytest.mark.parametrize(
    "spelling",
    [
        lambda a: ["-http-addr", a],
        lambda a: [f"-http-addr={a}"],
        lambda a: ["--http-addr", a],
        lambda a: [f"--http-addr={a}"],
    ],
    ids=["-flag value", "-flag=value", "--flag value", "--flag=value"],
)
def test_flag_spellings(buoy_cli: Buoy, spelling: Callable[[str], list[str]], closed_addr: str) -> None:
    buoy_cli("kv", "get", *spelling(closed_addr), "k").assert_one_line_error(
        1, unreachable_message(closed_addr)
    )


def test_flags_after_arguments_are_accepted(buoy_cli: Buoy, closed_addr: str) -> None:
    buoy_cli("kv", "get", "k", "-http-addr", closed_addr).assert_one_line_error(
        1, unreachable_message(closed_addr)
    )


def test_address_resolution_order(buoy_cli: Buoy, port_picker: Callable[[], int]) -> None:
    flag, buoy_env, consul_env = (f"127.0.0.1:{port_picker()}" for _ in range(3))
    both = {"BUOY_HTTP_ADDR": buoy_env, "CONSUL_HTTP_ADDR": consul_env}
    assert buoy_cli("members", "-http-addr", flag, env=both).stderr == unreachable_message(flag) + "\n"
    assert buoy_cli("members", env=both).stderr == unreachable_message(buoy_env) + "\n"
    assert buoy_cli("members", env={"CONSUL_HTTP_ADDR": consul_env}).stderr == (
        unreachable_message(consul_env) + "\n"
    )
    url = f"http://{flag}"
    assert buoy_cli("members", "-http-addr", url).stderr == unreachable_message(url) + "\n"


def test_default_address_is_consuls(buoy_cli: Buoy) -> None:
    run = buoy_cli("members")
    # Something may really listen on 8500 on a developer's machine; only the unreachable case is checked.
    if run.code == 1 and "cannot reach" in run.stderr:
        run.assert_one_line_error(1, unreachable_message("127.0.0.1:8500"))


@pytest.mark.parametrize(
    ("command", "stderr"),
    [
        (["kv", "get"], "Error! Missing KEY argument"),
        (["kv", "get", "a", "b"], "Too many arguments (expected 1, got 2)"),
        (["kv", "put"], "Error! Missing KEY argument"),
        (["kv", "put", "a", "b", "c"], "Too many arguments (expected 1 or 2, got 3)"),
        (["kv", "put", "/a", "b"], "Error! Invalid key. Key must not begin with a '/': /a"),
        (["kv", "put", "-cas", "a", "b"], "Must specify -modify-index with -cas!"),
        (["kv", "put", "-acquire", "a"], "Error! Missing -session (required with -acquire and -release)"),
        (["kv", "put", "-release", "a"], "Error! Missing -session (required with -acquire and -release)"),
        (["kv", "delete"], "Error! Missing KEY argument"),
        (["kv", "delete", "-modify-index=3", "a"], "Cannot specify -modify-index without -cas!"),
        (["kv", "delete", "-cas", "-recurse", "-modify-index=3", "a"],
         "Cannot specify both -cas and -recurse!"),
        (["kv", "import"], "Error! Missing DATA argument"),
        (["kv", "import", ""], "Error! Empty DATA argument"),
        (["members", "-status", "("], None),
        (["kv", "get", "-recurce", "a"], "Error: No such option: -recurce (did you mean -recurse?). "
         "See 'buoy kv get -help'."),
        (["kv", "put", "-flags=-1", "a"], None),
        (["kv", "get", "-recurse=maybe", "a"],
         "Error: Option '-recurse' does not take a value. See 'buoy kv get -help'."),
        (["kv", "put", "-modify-index", "x", "a"], None),
        (["catalog", "nodes", "-node-meta", "novalue"], None),
        (["kv", "get", "-http-addr", "127.0.0.1:notaport", "a"], None),
        (["nosuchcommand"], None),
    ],
)  # fmt: skip
def test_bad_usage_is_one_line_and_exit_2(buoy_cli: Buoy, command: list[str], stderr: str | None) -> None:
    buoy_cli(*command).assert_one_line_error(2, stderr)


def test_unreadable_data_file_is_an_error(buoy_cli: Buoy, tmp_path: Path) -> None:
    run = buoy_cli("kv", "put", "a", f"@{tmp_path / 'missing'}")
    run.assert_one_line_error(1)
    assert run.stderr.startswith("Error! Failed to read file:")


def test_help_spellings_exit_0(buoy_cli: Buoy) -> None:
    for flag in ("-h", "-help", "--help"):
        run = buoy_cli("kv", "put", flag)
        assert run.code == 0
        assert "-http-addr, --http-addr" in run.out
        assert "-modify-index, --modify-index" in run.out


def test_keygen_prints_a_fresh_32_byte_key(buoy_cli: Buoy) -> None:
    first, second = buoy_cli("keygen"), buoy_cli("keygen")
    assert first.code == second.code == 0
    assert len(base64.b64decode(first.out.strip(), validate=True)) == 32
    assert first.out != second.out


# -- against `buoy agent -dev` -------------------------------------------------------------------


def detailed(run: Run) -> dict[str, str]:
    """The name/value rows of `kv get -detailed`."""
    assert run.code == 0, run
    return parse_detailed(run.out)


def parse_detailed(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) if " " in line else (line, "") for line in text.splitlines())


def ok(run: Run, *lines: str) -> None:
    assert (run.code, run.stderr) == (0, ""), run
    if lines:
        assert run.lines() == list(lines)


def test_kv_put_get_delete(buoy: Buoy, prefix: str) -> None:
    key = f"{prefix}/greeting"
    ok(buoy("kv", "put", key, "hello world"), f"Success! Data written to: {key}")
    ok(buoy("kv", "get", key), "hello world")
    ok(buoy("kv", "get", f"/{key}"), "hello world")
    ok(buoy("kv", "get", "-stale", key), "hello world")
    ok(buoy("kv", "delete", key), f"Success! Deleted key: {key}")
    buoy("kv", "get", key).assert_one_line_error(1, f"Error! No key exists at: {key}")
    # Deleting what is not there is not an error, as in Consul.
    ok(buoy("kv", "delete", key), f"Success! Deleted key: {key}")


def test_go_flag_syntax(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    """Consul's Go flag parser: `-flag=true|false`, and nothing after the key of `kv put` is a flag."""
    key = f"{prefix}/go"
    ok(buoy("kv", "put", "-flags=1", key, "-cas=true"), f"Success! Data written to: {key}")
    assert c.kv.get(key)[1]["Value"] == b"-cas=true"
    ok(buoy("kv", "get", "-recurse=true", "-detailed=false", f"{prefix}/"), f"{key}:-cas=true")
    encoded = base64.b64encode(b"-cas=true").decode()
    ok(buoy("kv", "get", "-recurse=1", "-base64=t", "-stale=false", f"{prefix}/"), f"{key}:{encoded}")


def test_kv_put_data_sources(buoy: Buoy, c: consul.Consul, prefix: str, tmp_path: Path) -> None:
    payload = b"line one\nline two\x00\xff"
    ok(buoy("kv", "put", f"{prefix}/stdin", "-", input=payload))
    (tmp_path / "data").write_bytes(payload)
    ok(buoy("kv", "put", f"{prefix}/file", f"@{tmp_path / 'data'}"))
    ok(buoy("kv", "put", f"{prefix}/negative", "-1"))
    ok(buoy("kv", "put", f"{prefix}/empty"))
    assert c.kv.get(f"{prefix}/stdin")[1]["Value"] == payload
    assert c.kv.get(f"{prefix}/file")[1]["Value"] == payload
    assert c.kv.get(f"{prefix}/negative")[1]["Value"] == b"-1"
    assert c.kv.get(f"{prefix}/empty")[1]["Value"] in (b"", None)
    assert buoy("kv", "get", f"{prefix}/file").stdout == payload + b"\n"
    ok(buoy("kv", "get", f"{prefix}/empty"), "")


def test_kv_base64(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    key = f"{prefix}/bin"
    ok(buoy("kv", "put", "-base64", key, "AAEC/w=="))
    assert c.kv.get(key)[1]["Value"] == b"\x00\x01\x02\xff"
    ok(buoy("kv", "get", "-base64", key), "AAEC/w==")
    bad = buoy("kv", "put", "-base64", key, "not base64!")
    bad.assert_one_line_error(1)
    assert bad.stderr.startswith("Error! Cannot base 64 decode data:")


def test_kv_get_detailed(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    key = f"{prefix}/meta"
    ok(buoy("kv", "put", "-flags=42", key, "v1"))
    run = buoy("kv", "get", "-detailed", key)
    fields = detailed(run)
    stored = c.kv.get(key)[1]
    assert list(fields) == ["CreateIndex", "Flags", "Key", "LockIndex", "ModifyIndex", "Session", "Value"]
    assert fields["Key"] == key
    assert fields["Flags"] == "42"
    assert fields["Session"] == "-"
    assert fields["Value"] == "v1"
    assert int(fields["ModifyIndex"]) == stored["ModifyIndex"]
    assert int(fields["CreateIndex"]) == stored["CreateIndex"]
    # Consul's tabwriter layout: values start six columns after the longest name ("ModifyIndex").
    assert all(line[17:] and line[16] == " " and line[17] != " " for line in run.lines()), run.out


def test_kv_check_and_set(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    key = f"{prefix}/cas"
    ok(buoy("kv", "put", key, "v1"))
    index = c.kv.get(key)[1]["ModifyIndex"]

    stale = buoy("kv", "put", "-cas", f"-modify-index={index + 1000}", key, "v2")
    stale.assert_one_line_error(1, f"Error! Did not write to {key}: CAS failed")
    ok(buoy("kv", "put", "-cas", "-modify-index", str(index), key, "v2"), f"Success! Data written to: {key}")
    assert c.kv.get(key)[1]["Value"] == b"v2"

    stale = buoy("kv", "delete", "-cas", f"-modify-index={index}", key)
    stale.assert_one_line_error(1, f"Error! Did not delete key {key}: CAS failed")
    index = c.kv.get(key)[1]["ModifyIndex"]
    ok(buoy("kv", "delete", "-cas", f"-modify-index={index}", key), f"Success! Deleted key: {key}")
    assert c.kv.get(key)[1] is None


def test_kv_recurse_keys_and_delete_tree(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    for key, value in [("a", "1"), ("b/c", "2"), ("b/d", "3")]:
        c.kv.put(f"{prefix}/{key}", value)
    c.kv.put(f"{prefix}-sibling", "x")

    ok(buoy("kv", "get", "-recurse", f"{prefix}/"), f"{prefix}/a:1", f"{prefix}/b/c:2", f"{prefix}/b/d:3")
    ok(buoy("kv", "get", "-keys", f"{prefix}/"), f"{prefix}/a", f"{prefix}/b/")
    ok(
        buoy("kv", "get", "-keys", "-separator=", f"{prefix}/"),
        f"{prefix}/a",
        f"{prefix}/b/c",
        f"{prefix}/b/d",
    )
    ok(buoy("kv", "get", "-recurse", "-base64", f"{prefix}/b/c"), f"{prefix}/b/c:Mg==")

    blocks = buoy("kv", "get", "-recurse", "-detailed", f"{prefix}/b/").out.split("\n\n")
    assert [parse_detailed(b)["Key"] for b in blocks] == [f"{prefix}/b/c", f"{prefix}/b/d"]

    ok(
        buoy("kv", "get", "-recurse", f"{prefix}/nothing/"),
    )
    ok(buoy("kv", "delete", "-recurse", f"{prefix}/"), f"Success! Deleted keys with prefix: {prefix}/")
    ok(buoy("kv", "get", "-recurse", f"{prefix}/"))
    assert c.kv.get(f"{prefix}-sibling")[1]["Value"] == b"x"


def test_kv_export_import_round_trip(buoy: Buoy, c: consul.Consul, prefix: str, tmp_path: Path) -> None:
    c.kv.put(f"{prefix}/app/name", "web")
    c.kv.put(f"{prefix}/app/raw", b"\x00\xff", flags=7)
    c.kv.put(f"{prefix}/app/dir/", "")

    exported = buoy("kv", "export", f"{prefix}/app/")
    ok(exported)
    entries = json.loads(exported.out)
    assert entries == [
        {"key": f"{prefix}/app/dir/", "flags": 0, "value": ""},
        {"key": f"{prefix}/app/name", "flags": 0, "value": base64.b64encode(b"web").decode()},
        {"key": f"{prefix}/app/raw", "flags": 7, "value": base64.b64encode(b"\x00\xff").decode()},
    ]
    assert exported.out.startswith('[\n\t{\n\t\t"key": ')  # Consul's tab-indented layout

    ok(buoy("kv", "delete", "-recurse", f"{prefix}/app/"))
    ok(buoy("kv", "import", "-", input=exported.stdout), *(f"Imported: {e['key']}" for e in entries))
    assert json.loads(buoy("kv", "export", f"{prefix}/app/").out) == entries

    relative = [{**e, "key": e["key"].removeprefix(f"{prefix}/app/")} for e in entries]
    (tmp_path / "export.json").write_text(json.dumps(relative))
    ok(
        buoy("kv", "import", f"-prefix={prefix}/copy", f"@{tmp_path / 'export.json'}"),
        f"Imported: {prefix}/copy/dir/",
        f"Imported: {prefix}/copy/name",
        f"Imported: {prefix}/copy/raw",
    )
    assert c.kv.get(f"{prefix}/copy/raw")[1]["Value"] == b"\x00\xff"
    assert c.kv.get(f"{prefix}/copy/raw")[1]["Flags"] == 7

    inline = json.dumps([{"key": f"{prefix}/inline", "flags": 0, "value": "aGk="}])
    ok(buoy("kv", "import", inline), f"Imported: {prefix}/inline")
    ok(buoy("kv", "export", f"{prefix}/nothing"), "[]")


def test_kv_import_checks_everything_before_writing(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    document = json.dumps(
        [{"key": f"{prefix}/good", "flags": 0, "value": "aGk="}, {"key": f"{prefix}/bad", "value": "%%%"}]
    )
    run = buoy("kv", "import", document)
    run.assert_one_line_error(1)
    assert run.stderr.startswith(f"Error base 64 decoding value for key {prefix}/bad:")
    assert c.kv.get(f"{prefix}/good")[1] is None

    run = buoy("kv", "import", "{not json")
    run.assert_one_line_error(1)
    assert run.stderr.startswith("Cannot unmarshal data:")


def test_kv_lock_acquire_and_release(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    key = f"{prefix}/lock"
    holder, other = c.session.create(name="holder"), c.session.create(name="other")
    try:
        ok(
            buoy("kv", "put", "-acquire", f"-session={holder}", key, "me"),
            f"Success! Lock acquired on: {key}",
        )
        assert detailed(buoy("kv", "get", "-detailed", key))["Session"] == holder
        buoy("kv", "put", "-acquire", "-session", other, key).assert_one_line_error(
            1, "Error! Did not acquire lock"
        )
        buoy("kv", "put", "-release", "-session", other, key).assert_one_line_error(
            1, "Error! Did not release lock"
        )
        ok(buoy("kv", "put", "-release", f"-session={holder}", key), f"Success! Lock released on: {key}")
        assert detailed(buoy("kv", "get", "-detailed", key))["Session"] == "-"
    finally:
        c.session.destroy(holder)
        c.session.destroy(other)


def test_api_error_is_one_line(buoy: Buoy, prefix: str) -> None:
    # 600 kB is over Consul's 512 KiB value limit: the agent answers 413 with a plain-text reason.
    run = buoy("kv", "put", f"{prefix}/big", "-", input=b"a" * 600_000)
    run.assert_one_line_error(1)
    assert run.stderr.startswith("Error! Failed writing data: Request body(600000 bytes) too large")


def agent_config(dev_agent: DevAgent) -> dict[str, str]:
    config = dev_agent.get("/v1/agent/self")["Config"]  # type: ignore[index]
    return {"node": config["NodeName"], "dc": config["Datacenter"]}


def test_catalog_datacenters(buoy: Buoy, dev_agent: DevAgent) -> None:
    ok(buoy("catalog", "datacenters"), agent_config(dev_agent)["dc"])


def test_catalog_nodes(buoy: Buoy, dev_agent: DevAgent) -> None:
    me = agent_config(dev_agent)
    run = buoy("catalog", "nodes")
    ok(run)
    header, *rows = run.lines()
    assert re.fullmatch(r"Node +ID +Address +DC", header)
    assert any(row.split()[0] == me["node"] and row.split()[-1] == me["dc"] for row in rows), run.out
    # Columns line up under their headers.
    for row in rows:
        assert row[header.index("Address")] != " " and row[header.index("Address") - 1] == " "

    run = buoy("catalog", "nodes", "-detailed")
    assert re.fullmatch(r"Node +ID +Address +DC +TaggedAddresses +Meta", run.lines()[0]), run.out

    assert buoy("catalog", "nodes", "-node-meta", "no-such=meta").stderr == (
        "No nodes match the given query - try expanding your search.\n"
    )


def test_catalog_services(buoy: Buoy, c: consul.Consul, base: str, prefix: str) -> None:
    # A node of its own: the agent's anti-entropy may prune services it did not register on its node.
    node, name = f"node-{prefix}", f"web-{prefix}"
    registration = {
        "Node": node,
        "Address": "127.0.0.1",
        "NodeMeta": {"rack": prefix},  # py-consul cannot send NodeMeta, hence the raw request
        "Service": {"ID": name, "Service": name, "Tags": ["v1", "blue"], "Port": 8080},
    }
    assert requests.put(f"{base}/v1/catalog/register", json=registration, timeout=5).json() is True
    try:
        run = buoy("catalog", "services")
        ok(run)
        assert name in run.lines()
        assert run.lines() == sorted(run.lines())

        tagged = [line for line in buoy("catalog", "services", "-tags").lines() if line.startswith(name)]
        assert len(tagged) == 1 and re.fullmatch(rf"{name} {{6,}}blue,v1", tagged[0]), tagged
        ok(buoy("catalog", "services", "-node", node), name)
        ok(buoy("catalog", "services", "-tags", f"-node={node}"), f"{name}      blue,v1")
        ok(buoy("catalog", "services", "-node-meta", f"rack={prefix}"), name)

        for args in (["-service", name], [f"-node-meta=rack={prefix}"]):
            nodes = buoy("catalog", "nodes", *args)
            ok(nodes)
            assert [row.split()[0] for row in nodes.lines()[1:]] == [node]
            assert nodes.lines()[1].split()[-2:] == ["127.0.0.1", "dc1"]

        no_nodes = (0, "No nodes match the given query - try expanding your search.\n")
        missing = buoy("catalog", "nodes", f"-service=no-such-{prefix}")
        assert (missing.code, missing.stderr) == no_nodes
        missing = buoy("catalog", "services", f"-node=no-such-{prefix}")
        assert (missing.code, missing.stderr) == (
            0,
            "No services match the given query - try expanding your search.\n",
        )
    finally:
        c.catalog.deregister(node)


def test_members(buoy: Buoy, dev_agent: DevAgent) -> None:
    me = agent_config(dev_agent)
    run = buoy("members")
    ok(run)
    header, *rows = run.lines()
    assert header.split() == [
        "Node",
        "Address",
        "Status",
        "Type",
        "Build",
        "Protocol",
        "DC",
        "Partition",
        "Segment",
    ]
    mine = [row.split() for row in rows if row.split()[0] == me["node"]]
    assert len(mine) == 1, run.out
    node, address, status, kind, *_ = mine[0]
    assert (status, kind, mine[0][-3]) == ("alive", "server", me["dc"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address)

    assert buoy("members", "-status=alive").code == 0
    assert buoy("members", "-status=^failed$").code == 2
    assert buoy("members", "-detailed").lines()[0].split() == ["Node", "Address", "Status", "Tags"]


def test_operator_raft_list_peers(buoy: Buoy, dev_agent: DevAgent) -> None:
    me = agent_config(dev_agent)
    run = buoy("operator", "raft", "list-peers")
    ok(run)
    header, *rows = run.lines()
    assert re.match(r"Node +ID +Address +State +Voter +RaftProtocol", header)
    assert len(rows) == 1
    fields = rows[0].split()
    assert fields[0] == me["node"]
    assert fields[3:5] == ["leader", "true"]
    assert ok(buoy("operator", "raft", "list-peers", "-stale")) is None
