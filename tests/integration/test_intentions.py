"""Intentions against real agents: the shared -dev agent (CRUD by name and by ID, blocking reads, precedence in
match, check and authorize with exact and wildcard rules, the CLI, bad input), a non-dev single server (default
deny, the `*` => `*` rule, a restart) and a client agent of a 3-server cluster (authorize from its cache,
following changes, answering while the servers are gone)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from pathlib import Path
from typing import Any

import consul
import pytest
import requests

from tests.integration.cluster import Cluster
from tests.integration.conftest import REPO, Run, clean_env, free_port, run_buoy, wait_until

TD = "11111111-2222-3333-4444-555555555555.consul"
UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def names(*roles: str) -> list[str]:
    """Service names of this test's own: the dev agent is shared by every test of the session."""
    tag = uuid.uuid4().hex[:8]
    return [f"{role}-{tag}" for role in roles]


def spiffe(service: str) -> str:
    return f"spiffe://{TD}/ns/default/dc/dc1/svc/{service}"


class API:
    """Raw HTTP on one agent, with Consul's paths."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        return requests.request(method, self.base + path, params=params, data=data, timeout=20)

    def upsert(self, source: str, destination: str, body: Any) -> requests.Response:
        return self.call("PUT", "/v1/connect/intentions/exact", body, source=source, destination=destination)

    def exact(self, source: str, destination: str) -> requests.Response:
        return self.call("GET", "/v1/connect/intentions/exact", source=source, destination=destination)

    def delete_exact(self, source: str, destination: str) -> requests.Response:
        return self.call("DELETE", "/v1/connect/intentions/exact", source=source, destination=destination)

    def allowed(self, source: str, destination: str) -> bool:
        resp = self.call("GET", "/v1/connect/intentions/check", source=source, destination=destination)
        assert resp.status_code == 200, resp.text
        return resp.json()["Allowed"]

    def authorize(self, target: str, source: str) -> dict[str, Any]:
        resp = self.call("POST", "/v1/agent/connect/authorize",
                         {"Target": target, "ClientCertURI": spiffe(source), "ClientCertSerial": "01"})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def match(self, by: str, name: str) -> list[dict[str, Any]]:
        resp = self.call("GET", "/v1/connect/intentions/match", by=by, name=name)
        assert resp.status_code == 200, resp.text
        return resp.json()[name]

    def index(self) -> int:
        return int(self.call("GET", "/v1/connect/intentions").headers["X-Consul-Index"])


@pytest.fixture
def api(base: str) -> API:
    return API(base)


def rules(ixns: list[dict[str, Any]], mine: set[str]) -> list[tuple[str, str, int]]:
    """(source, destination, precedence) of the intentions that name one of this test's services, in the
    order given."""
    return [(i["SourceName"], i["DestinationName"], i["Precedence"]) for i in ixns
            if {i["SourceName"], i["DestinationName"]} & mine]


# ---- by name (the modern API) ----------------------------------------------------------------------------


def test_crud_by_name_with_a_blocking_list(api: API) -> None:
    web, db = names("web", "db")
    start = api.index()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(api.call, "GET", "/v1/connect/intentions", index=start, wait="20s")
        with pytest.raises(FutureTimeout):
            waiting.result(timeout=0.5)  # blocks: nothing changed yet
        assert api.upsert(web, db, {"Action": "allow", "Description": "web to db"}).json() is True
        woken = waiting.result(timeout=15)
    assert int(woken.headers["X-Consul-Index"]) > start
    assert rules(woken.json(), {web}) == [(web, db, 9)]

    got = api.exact(web, db)
    assert got.status_code == 200
    ixn = got.json()
    assert {k: ixn[k] for k in ("ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName",
                                "SourceType", "Action", "Meta", "Precedence")} == {
        "ID": "", "Description": "web to db", "SourceNS": "default", "SourceName": web, "DestinationNS": "default",
        "DestinationName": db, "SourceType": "consul", "Action": "allow", "Meta": {}, "Precedence": 9}
    # Written by name: no ID, times or Hash, as in Consul.
    assert not {"CreatedAt", "UpdatedAt", "Hash"} & set(ixn)
    assert int(got.headers["X-Consul-Index"]) >= ixn["ModifyIndex"] == ixn["CreateIndex"]

    # An upsert replaces the pair's intention in place.
    assert api.upsert(web, db, {"Action": "deny"}).json() is True
    again = api.exact(web, db).json()
    assert (again["Action"], again["Description"], again["CreateIndex"]) == ("deny", "", ixn["CreateIndex"])
    assert again["ModifyIndex"] > ixn["ModifyIndex"]
    listed = api.call("GET", "/v1/connect/intentions", filter=f'SourceName == "{web}"').json()
    assert [(i["SourceName"], i["Action"]) for i in listed] == [(web, "deny")]

    assert api.delete_exact(web, db).json() is True
    missing = api.exact(web, db)
    assert (missing.status_code, missing.text.strip()) == (404, "Intention not found")
    assert api.delete_exact(web, db).json() is True  # deleting by name is idempotent


def test_py_consul_client(c: consul.Consul) -> None:
    web, db = names("web", "db")
    assert c.connect.intentions.upsert(web, db, action="allow", description="via py-consul")
    assert c.connect.intentions.read(web, db)["Description"] == "via py-consul"
    assert [i["SourceName"] for i in c.connect.intentions.list(filter_expr=f'DestinationName == "{db}"')] == [web]
    assert c.connect.intentions.check(web, db) is True
    assert [i["SourceName"] for i in c.connect.intentions.match("destination", db)[db]] == [web]
    # py-consul sends PUT where Consul's own client sends POST; both are answered.
    answer = c.agent.connect.authorize(db, spiffe(web), "01")
    assert answer["Authorized"] is True and answer["Reason"].startswith("Matched L4 intention: ")
    assert c.connect.intentions.delete(web, db)
    assert [i for i in c.connect.intentions.list() if i["DestinationName"] == db] == []


# ---- by ID (the legacy API) ------------------------------------------------------------------------------


def test_crud_by_id(api: API) -> None:
    web, api_svc, db = names("web", "api", "db")
    created = api.call("POST", "/v1/connect/intentions",
                       {"SourceName": web, "DestinationName": db, "Action": "allow", "Meta": {"team": "a"}})
    assert created.status_code == 200, created.text
    ixn_id = created.json()["ID"]
    assert re.match(UUID_RE, ixn_id)

    got = api.call("GET", f"/v1/connect/intentions/{ixn_id}").json()
    assert (got["ID"], got["SourceName"], got["DestinationName"], got["Action"], got["Meta"], got["Precedence"]) == (
        ixn_id, web, db, "allow", {"team": "a"}, 9)
    assert got["CreatedAt"] == got["UpdatedAt"] and got["CreatedAt"].endswith("Z")
    assert len(base64.b64decode(got["Hash"])) == 32
    assert api.exact(web, db).json()["ID"] == ixn_id  # the same row, found by name

    # A second intention for the pair is refused, with Consul's message, and nothing changes.
    before = api.index()
    dup = api.call("POST", "/v1/connect/intentions", {"SourceName": web, "DestinationName": db, "Action": "deny"})
    assert (dup.status_code, dup.text.strip()) == (500, f'Sources[1] defines "{web}" more than once')
    assert api.index() == before and api.exact(web, db).json()["Action"] == "allow"

    # An update by ID may change the source and everything else but the destination.
    upd = api.call("PUT", f"/v1/connect/intentions/{ixn_id}",
                   {"SourceName": api_svc, "DestinationName": db, "Action": "deny", "Description": "moved"})
    assert upd.json() == {"ID": ixn_id}
    after = api.call("GET", f"/v1/connect/intentions/{ixn_id}").json()
    assert (after["SourceName"], after["Action"], after["Description"], after["Meta"]) == (api_svc, "deny", "moved", {})
    assert after["CreatedAt"] == got["CreatedAt"]
    assert datetime.fromisoformat(after["UpdatedAt"]) > datetime.fromisoformat(got["UpdatedAt"])
    assert after["CreateIndex"] == got["CreateIndex"] < after["ModifyIndex"]
    assert api.exact(web, db).status_code == 404
    moved = api.call("PUT", f"/v1/connect/intentions/{ixn_id}",
                     {"SourceName": api_svc, "DestinationName": web, "Action": "deny"})
    assert (moved.status_code, moved.text.strip()) == (
        500, "Cannot modify Destination partition/namespace/name for an intention once it exists.")

    assert api.call("DELETE", f"/v1/connect/intentions/{ixn_id}").json() is True
    gone = api.call("GET", f"/v1/connect/intentions/{ixn_id}")
    assert (gone.status_code, gone.text.strip()) == (404, "Intention not found")


def test_legacy_writes_refused_once_a_destination_was_written_by_name(api: API) -> None:
    web, other, db = names("web", "other", "db")
    api.upsert(web, db, {"Action": "allow"})
    try:
        refused = api.call("POST", "/v1/connect/intentions",
                           {"SourceName": other, "DestinationName": db, "Action": "allow"})
        assert (refused.status_code, refused.text.strip()) == (
            500, f'cannot use legacy intention API to edit intentions with a destination of "{db}" after editing '
                 "them via a service-intentions config entry")
    finally:
        api.delete_exact(web, db)


# ---- evaluation ------------------------------------------------------------------------------------------


def test_precedence_orders_match(api: API) -> None:
    web, db = names("web", "db")
    written = [(web, "*", "deny"), ("*", db, "deny"), (web, db, "allow")]
    for source, destination, action in written:
        assert api.upsert(source, destination, {"Action": action}).json() is True
    try:
        mine = {web, db}
        # Each rule applies to web => db; exact names first: both ends, then the destination, then the source.
        for by, name in (("destination", db), ("source", web)):
            assert rules(api.match(by, name), mine) == [(web, db, 9), ("*", db, 8), (web, "*", 6)]
        # Several names at once: one list per name, keyed as asked.
        both = api.call("GET", "/v1/connect/intentions/match", by="destination", name=[db, "*"]).json()
        assert set(both) == {db, "*"} and rules(both["*"], mine) == [(web, "*", 6)]
    finally:
        for source, destination, _ in written:
            api.delete_exact(source, destination)


def test_check_and_authorize_exact_beats_wildcard(api: API) -> None:
    web, other, db = names("web", "other", "db")
    api.upsert("*", db, {"Action": "deny"})
    api.upsert(web, db, {"Action": "allow"})
    try:
        assert api.allowed(web, db) is True
        assert api.allowed(other, db) is False
        assert api.authorize(db, web) == {"Authorized": True, "Reason": (
            f"Matched L4 intention: default/{web} => default/{db} (Precedence: 9, Action: ALLOW)")}
        assert api.authorize(db, other) == {"Authorized": False, "Reason": (
            f"Matched L4 intention: default/* => default/{db} (Precedence: 8, Action: DENY)")}

        # The agent's cached answer follows a change.
        api.upsert(web, db, {"Action": "deny"})
        wait_until(lambda: api.authorize(db, web)["Authorized"] is False, "authorize to follow the deny")
        assert api.allowed(web, db) is False

        # An L7 intention decides as a deny for a connection: it cannot be judged before a request is seen.
        api.upsert(web, db, {"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/api", "Methods": ["get"]}}]})
        l7 = api.exact(web, db).json()
        assert l7["Action"] == "" and l7["Permissions"] == [
            {"Action": "allow", "HTTP": {"PathPrefix": "/api", "Methods": ["GET"]}}]
        assert api.allowed(web, db) is False
        wait_until(lambda: api.authorize(db, web)["Reason"].startswith("Matched L7 intention: "), "the L7 reason")
        assert api.authorize(db, web) == {
            "Authorized": False,
            "Reason": f"Matched L7 intention: default/{web} => default/{db} (Precedence: 9, Permissions: 1)"}
    finally:
        api.delete_exact("*", db)
        api.delete_exact(web, db)


def test_default_allow_in_dev(api: API) -> None:
    web, db = names("web", "db")
    assert api.allowed(web, db) is True
    assert api.authorize(db, web) == {"Authorized": True, "Reason": "Default behavior configured by ACLs"}


# ---- the CLI -----------------------------------------------------------------------------------------------


def test_cli(buoy: Callable[..., Run], api: API, tmp_path: Path) -> None:
    web, db, batch = names("web", "db", "batch")
    made = buoy("intention", "create", web, db)
    assert (made.code, made.out) == (0, f"Created: {web} => {db} (allow)\n"), made
    dup = buoy("intention", "create", web, db)
    dup.assert_one_line_error(1, f'Error creating intention "{web} => {db} (allow)": '
                                 f'Sources[1] defines "{web}" more than once')
    denied = buoy("intention", "create", "-deny", "*", db)
    assert (denied.code, denied.out) == (0, f"Created: * => {db} (deny)\n"), denied
    try:
        shown = buoy("intention", "get", web, db)
        assert shown.code == 0, shown
        rows = dict(line.split(":", 1) for line in shown.lines())
        assert {k: v.strip() for k, v in rows.items() if k != "Created At"} == {
            "Source": web, "Destination": db, "Action": "allow", "ID": api.exact(web, db).json()["ID"]}
        by_id = buoy("intention", "get", rows["ID"].strip())
        assert by_id.out == shown.out

        check = buoy("intention", "check", web, db)
        assert (check.code, check.out) == (0, "Allowed\n")
        check = buoy("intention", "check", f"x-{web}", db)
        assert (check.code, check.out) == (1, "Denied\n")  # Consul's codes: 1 denied, 2 an error

        match = buoy("intention", "match", db)
        assert (match.code, match.lines()) == (0, [f"{web} => {db} (allow)", f"* => {db} (deny)"])
        match = buoy("intention", "match", "-source", web)
        assert f"{web} => {db} (allow)" in match.lines()

        listing = buoy("intention", "list")
        assert listing.lines()[0].split() == ["ID", "Source", "Action", "Destination", "Precedence"]
        assert [line.split()[1:] for line in listing.lines() if db in line] == [
            [web, "allow", db, "9"], ["*", "deny", db, "8"]]

        replaced = buoy("intention", "create", "-replace", "-deny", web, db)
        assert (replaced.code, replaced.out) == (0, ""), replaced
        assert api.exact(web, db).json()["Action"] == "deny"

        # From files (one from stdin), as Consul's -file reads them.
        (tmp_path / "one.json").write_text(json.dumps({"SourceName": batch, "DestinationName": db, "Action": "deny"}))
        files = buoy("intention", "create", "-file", str(tmp_path / "one.json"), "-",
                     input=json.dumps({"sourcename": batch, "destinationname": web, "action": "allow"}))
        assert files.lines() == [f"Created: {batch} => {db} (deny)", f"Created: {batch} => {web} (allow)"], files

        assert buoy("intention", "delete", batch, web).out == "Intention deleted.\n"
        assert buoy("intention", "delete", api.exact(batch, db).json()["ID"]).out == "Intention deleted.\n"
        gone = buoy("intention", "get", batch, db)
        gone.assert_one_line_error(1, f'Intention not found with source "{batch}" and destination "{db}"')
    finally:
        for source in (web, "*"):
            api.delete_exact(source, db)

    for args, text in [(("create", "-allow", "-deny", "a", "b"), "Only one of -allow or -deny may be specified."),
                       (("create", "a"), "Error: Must specify two arguments: source and destination"),
                       (("check", "a"), "Error: command requires exactly two arguments: src and dst"),
                       (("match", "-source", "-destination", "a"),
                        "Error: only one of -source or -destination may be specified"),
                       (("get",), "command requires exactly 1 or 2 arguments"),
                       (("create", "a/b/c/d", "e"),
                        "Error: Invalid intention source: input can contain at most two '/'")]:
        buoy("intention", *args).assert_one_line_error(2, text)
    buoy("intention", "get", "nope").assert_one_line_error(
        1, "Error reading the intention: failed config entry lookup: UUID must be 36 characters")
    unreachable = run_buoy("intention", "check", "a", "b", "-http-addr", f"127.0.0.1:{free_port()}")
    unreachable.assert_one_line_error(2)
    assert unreachable.stderr.startswith("Error checking the connection: cannot reach the agent at")


# ---- bad input -------------------------------------------------------------------------------------------


def test_bad_input_changes_nothing(api: API) -> None:
    web, db = names("web", "db")
    api.upsert(web, db, {"Action": "allow", "Description": "keep"})
    try:
        before = api.index()
        missing_id = "00000000-0000-4000-8000-000000000000"
        cases: list[tuple[str, str, Any, dict[str, Any], int, str]] = [
            ("POST", "/v1/connect/intentions", "{nope", {}, 500, "Failed to decode request body: "),
            ("POST", "/v1/connect/intentions", {"SourceName": 5}, {}, 500,
             "Failed to decode request body: Intention.SourceName: expected a string"),
            ("POST", "/v1/connect/intentions", {"SourceName": web, "DestinationName": db, "Action": "maybe"}, {}, 500,
             "1 error occurred: Action must be set to 'allow' or 'deny'"),
            ("POST", "/v1/connect/intentions", {"Action": "allow"}, {}, 500,
             "2 errors occurred: SourceName must be set; DestinationName must be set"),
            ("POST", "/v1/connect/intentions", {"SourceName": "we*b", "DestinationName": db, "Action": "allow"}, {},
             500, "1 error occurred: SourceName: wildcard character '*' cannot be used with partial values"),
            ("POST", "/v1/connect/intentions", {"ID": missing_id, "SourceName": "a", "DestinationName": "b",
                                                "Action": "allow"}, {}, 500,
             "ID must be empty when creating a new intention"),
            ("POST", "/v1/connect/intentions", {"SourceName": "a", "SourceNS": "team", "DestinationName": "b",
                                                "Action": "allow"}, {}, 400,
             "Invalid SourceNS(team): Namespaces is a Consul Enterprise feature"),
            ("PUT", "/v1/connect/intentions/exact", "{nope", {"source": web, "destination": db}, 400,
             "Request decode failed: "),
            ("PUT", "/v1/connect/intentions/exact", {"Action": "sure"}, {"source": web, "destination": db}, 500,
             "Sources[0].Action must be set to 'allow' or 'deny'"),
            ("PUT", "/v1/connect/intentions/exact", {"Action": ["allow"]}, {"source": web, "destination": db}, 400,
             "Request decode failed: Intention.Action: expected a string"),
            ("PUT", "/v1/connect/intentions/exact", {"Action": "allow"}, {"source": web}, 500,
             "required query parameter 'destination' not set"),
            ("PUT", "/v1/connect/intentions/exact", {"Action": "allow"}, {"source": "", "destination": db}, 500,
             "required query parameter 'source' not set"),
            ("PUT", "/v1/connect/intentions/exact", {"Action": "allow"}, {"source": "w*", "destination": db}, 500,
             "Sources[1].Name: wildcard character '*' cannot be used with partial values"),
            ("PUT", "/v1/connect/intentions/exact", {"Action": "allow", "Meta": {"k": "v"}},
             {"source": web, "destination": db}, 500,
             "Meta must not be specified, or should be unchanged during an update."),
            ("PUT", "/v1/connect/intentions/exact", {"Action": "allow", "Permissions": [{"Action": "allow"}]},
             {"source": web, "destination": db}, 500, "Sources[0].Action must be omitted if Permissions are specified"),
            ("PUT", "/v1/connect/intentions/exact", {"Permissions": [{"Action": "allow", "HTTP": {"PathExact": "x"}}]},
             {"source": web, "destination": db}, 500,
             "Sources[0].Permissions[0].HTTP.PathExact doesn't start with '/': \"x\""),
            ("PUT", "/v1/connect/intentions/exact", {"Action": "allow"}, {"source": "a/b/c/d", "destination": db}, 500,
             "source \"a/b/c/d\" is invalid: input can contain at most two '/'"),
            ("PUT", f"/v1/connect/intentions/{missing_id}", {"SourceName": "a", "DestinationName": "b",
                                                               "Action": "bad"}, {}, 500,
             f"Cannot modify non-existent intention: '{missing_id}'"),
            ("DELETE", f"/v1/connect/intentions/{missing_id}", None, {}, 500,
             f"Cannot delete non-existent intention: '{missing_id}'"),
            ("DELETE", "/v1/connect/intentions/not-a-uuid", None, {}, 500,
             "Intention lookup failed: failed config entry lookup: UUID must be 36 characters"),
            ("GET", "/v1/connect/intentions/not-a-uuid", None, {}, 400,
             "failed config entry lookup: UUID must be 36 characters"),
            ("GET", f"/v1/connect/intentions/{missing_id}", None, {}, 404, "Intention not found"),
            ("GET", "/v1/connect/intentions/match", None, {"name": db}, 500, "required query parameter 'by' not set"),
            ("GET", "/v1/connect/intentions/match", None, {"by": "both", "name": db}, 500,
             "'by' parameter must be one of 'source' or 'destination'"),
            ("GET", "/v1/connect/intentions/match", None, {"by": "source"}, 500,
             "required query parameter 'name' not set"),
            ("GET", "/v1/connect/intentions/check", None, {"source": web}, 500,
             "required query parameter 'destination' not set"),
            ("GET", "/v1/connect/intentions/check", None, {"source": web, "destination": db, "source-type": "ip"}, 500,
             'unsupported SourceType: "ip"'),
            ("GET", "/v1/connect/intentions?filter=Nope%20==%201", None, {}, 400, 'Selector "Nope" is not valid'),
            ("DELETE", "/v1/connect/intentions", None, {}, 405, "method DELETE not allowed"),
            ("POST", "/v1/agent/connect/authorize", "{nope", {}, 400, "Request decode failed: "),
            ("POST", "/v1/agent/connect/authorize", {"ClientCertURI": spiffe(web)}, {}, 400,
             "Target service must be specified"),
            ("POST", "/v1/agent/connect/authorize", {"Target": db, "ClientCertURI": "https://example.com/x"}, {}, 400,
             "ClientCertURI not a valid Connect identifier"),
            ("POST", "/v1/agent/connect/authorize",
             {"Target": db, "ClientCertURI": f"spiffe://{TD}/agent/client/dc/dc1/id/abc"}, {}, 400,
             "ClientCertURI not a valid Service identifier"),
        ]
        for method, path, body, params, status, text in cases:
            resp = api.call(method, path, body, **params)
            assert resp.status_code == status and resp.text.startswith(text), (method, path, body, resp.text)
            assert "Traceback" not in resp.text and resp.text.count("\n") <= 1, resp.text
        assert api.index() == before
        kept = api.exact(web, db).json()
        assert (kept["Action"], kept["Description"]) == ("allow", "keep")
    finally:
        api.delete_exact(web, db)


# ---- a production-style server: default deny -------------------------------------------------------------


class Solo:
    """One `buoy agent -server -bootstrap-expect 1`, restartable on the same ports and data dir."""

    def __init__(self, root: Path, *mode: str) -> None:
        self.port = free_port()
        self.log = root / "agent.log"
        self.cmd = [sys.executable, "-m", "buoy", "agent", *(mode or ("-server", "-bootstrap-expect", "1")),
                    "-node", "solo", "-bind", "127.0.0.1", "-http-port", str(self.port),
                    "-server-port", str(free_port()), "-dns-port", "-1", "-data-dir", str(root / "data"),
                    "-encrypt", base64.b64encode(os.urandom(32)).decode()]
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = API(f"http://127.0.0.1:{self.port}")

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
        proc = self.proc
        wait_until(lambda: proc.poll() is not None or self.api.call("GET", "/v1/status/leader").json(),
                   "a leader", timeout=30)
        assert proc.poll() is None, self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[Solo]:
    agent = Solo(tmp_path)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()


def test_default_deny_outside_dev_and_the_catch_all_rule(solo: Solo) -> None:
    api = solo.api
    assert api.allowed("web", "db") is False
    assert api.authorize("db", "web") == {"Authorized": False, "Reason": "Default behavior configured by ACLs"}

    assert api.upsert("*", "*", {"Action": "allow"}).json() is True
    assert api.upsert("web", "*", {"Action": "deny"}).json() is True
    assert [(i["SourceName"], i["DestinationName"], i["Precedence"]) for i in api.match("destination", "db")] == [
        ("web", "*", 6), ("*", "*", 5)]
    assert api.allowed("api", "db") is True and api.allowed("web", "db") is False
    wait_until(lambda: api.authorize("db", "api")["Authorized"], "authorize to follow the catch-all rule")

    # Intentions are replicated state: they outlive a restart.
    solo.stop()
    solo.start()
    assert [(i["SourceName"], i["DestinationName"]) for i in api.call("GET", "/v1/connect/intentions").json()] == [
        ("web", "*"), ("*", "*")]
    assert api.allowed("api", "db") is True


def test_intentions_default_setting(tmp_path: Path) -> None:
    (tmp_path / "deny.json").write_text(json.dumps({"intentions_default": "deny"}))
    # -dev allows unless told otherwise.
    agent = Solo(tmp_path, "-dev", "-config-file", str(tmp_path / "deny.json"))
    try:
        agent.start()
        assert agent.api.allowed("web", "db") is False
        assert agent.api.authorize("db", "web") == {"Authorized": False, "Reason": "Default intention policy"}
    finally:
        agent.stop()

    (tmp_path / "bad.json").write_text(json.dumps({"intentions_default": "maybe"}))
    refused = run_buoy("validate", str(tmp_path / "bad.json"))
    assert refused.code == 1 and "intentions_default: 'maybe' is not allow or deny" in refused.stderr, refused


# ---- a client agent ----------------------------------------------------------------------------------------


def test_authorize_on_a_client_agent_follows_changes_from_its_cache(cluster: Cluster) -> None:
    client = cluster.add_client([0])
    on_client = API(f"http://127.0.0.1:{cluster.http[client]}")
    wait_until(lambda: on_client.call("GET", "/v1/status/leader").json(), "the client to reach the servers")
    servers = [API(f"http://127.0.0.1:{cluster.http[i]}") for i in range(3)]

    assert servers[1].upsert("web", "db", {"Action": "deny"}).json() is True
    # The first question reads the servers (through the client's own API); reads are the leader's, so the
    # write above is seen.
    assert on_client.authorize("db", "web")["Authorized"] is False
    assert on_client.authorize("db", "api") == {"Authorized": False, "Reason": "Default behavior configured by ACLs"}

    # A change made on another server reaches the client's cached answer by its blocking query.
    assert servers[2].upsert("web", "db", {"Action": "allow"}).json() is True
    wait_until(lambda: on_client.authorize("db", "web")["Authorized"] is True, "the client to follow the allow")
    assert on_client.authorize("db", "web")["Reason"] == (
        "Matched L4 intention: default/web => default/db (Precedence: 9, Action: ALLOW)")

    # With every server gone the cached decisions still stand: a repeated question costs no call.
    for i in range(3):
        cluster.kill(i)
    assert on_client.authorize("db", "web")["Authorized"] is True
    unknown = on_client.call("POST", "/v1/agent/connect/authorize",
                             {"Target": "never-asked", "ClientCertURI": spiffe("web")})
    assert unknown.status_code == 500, unknown.text
