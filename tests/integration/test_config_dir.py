"""Services and checks from -config-dir files (JSON and HCL): registered at start, changed by a reload
(`buoy reload`, SIGHUP, PUT /v1/agent/reload) without touching API registrations, refused with the file and
key named, and read again from the files after a restart while API registrations come back from -data-dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import consul
import pytest
import requests

from tests.integration.conftest import REPO, clean_env, free_port, run_buoy, wait_until

KEY = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="

WEB_HCL = """
service {
  name = "web"
  id   = "web-1"
  port = 80
  tags = ["v1"]
  meta { team = "edge" }
  check {
    id  = "web-alive"
    ttl = "30s"
  }
}
checks {
  id  = "disk"
  name = "disk space"
  ttl = "60s"
}
"""

DB_JSON = {
    "services": [
        {"name": "db", "port": 5432, "checks": [{"ttl": "30s"}, {"TTL": "45s", "Name": "replication"}]},
        {"Name": "cache", "Port": 6379},
    ],
}


class ConfigAgent:
    """One `buoy agent` process reading a config dir of its own; restartable on the same ports and data."""

    def __init__(self, root: Path, *mode: str) -> None:
        self.dir = root / "conf.d"
        self.dir.mkdir()
        self.log = root / "agent.log"
        self.http_port = free_port()
        self.args = [sys.executable, "-m", "buoy", "agent", *mode, "-http-port", str(self.http_port),
                     "-server-port", str(free_port()), "-dns-port", "-1", "-config-dir", str(self.dir)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.c = consul.Consul(port=self.http_port)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def write(self, name: str, text: str) -> None:
        (self.dir / name).write_text(text)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
        proc = self.proc
        wait_until(lambda: proc.poll() is not None or self.c.status.leader(), "a leader", timeout=20)
        assert proc.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)

    def services(self) -> dict[str, dict]:
        return self.c.agent.services()

    def reload(self) -> requests.Response:
        return requests.put(f"http://{self.addr}/v1/agent/reload", timeout=10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[ConfigAgent]:
    """A -dev agent with a config dir holding web.hcl and db.json (started by the test once it is ready)."""
    a = ConfigAgent(tmp_path, "-dev")
    a.write("web.hcl", WEB_HCL)
    a.write("db.json", json.dumps(DB_JSON))
    try:
        yield a
    finally:
        a.stop()


def catalog_ports(c: consul.Consul, name: str) -> list[int]:
    return [s["ServicePort"] for s in c.catalog.service(name)[1]]


def test_services_and_checks_from_json_and_hcl(agent: ConfigAgent) -> None:
    # -dev enables enable_local_script_checks: a script check in a config file runs.
    agent.write("script.hcl", 'check {\n  id = "script-ok"\n  args = ["true"]\n  interval = "1s"\n}\n')
    agent.start()
    services = agent.services()
    assert set(services) == {"web-1", "db", "cache"}
    web = services["web-1"]
    assert (web["Service"], web["Port"], web["Tags"], web["Meta"]) == ("web", 80, ["v1"], {"team": "edge"})
    checks = agent.c.agent.checks()
    assert set(checks) == {"web-alive", "disk", "service:db:1", "service:db:2", "script-ok"}
    assert checks["web-alive"]["ServiceID"] == "web-1" and checks["disk"]["ServiceID"] == ""
    assert checks["service:db:2"]["Name"] == "replication"
    assert all(ch["Status"] == "critical" for ch in checks.values() if ch["Type"] == "ttl")  # they start critical
    wait_until(lambda: agent.c.agent.checks()["script-ok"]["Status"] == "passing", "the script check passing")
    wait_until(lambda: catalog_ports(agent.c, "web") == [80] and catalog_ports(agent.c, "cache") == [6379],
               "the config services in the catalog")
    # Their TTL checks report like any other (the node check "disk" counts for every service of the node).
    agent.c.agent.check.ttl_pass("web-alive")
    agent.c.agent.check.ttl_pass("disk")
    wait_until(lambda: agent.c.health.service("web", passing=True)[1], "web passing in the catalog")


def _sighup(agent: ConfigAgent) -> None:
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGHUP)


def _cli(agent: ConfigAgent) -> None:
    run = run_buoy("reload", "-http-addr", agent.addr)
    assert (run.code, run.out, run.stderr) == (0, "Configuration reload triggered\n", ""), run


def _http(agent: ConfigAgent) -> None:
    r = agent.reload()
    assert (r.status_code, r.text) == (200, ""), r.text


@pytest.mark.parametrize("trigger", [_cli, _sighup, _http], ids=["buoy reload", "SIGHUP", "PUT /v1/agent/reload"])
def test_reload_adds_changes_and_removes_config_services(
        agent: ConfigAgent, trigger: Callable[[ConfigAgent], None]) -> None:
    agent.start()
    c = agent.c
    c.agent.service.register("api-svc", service_id="api-1", port=9000, check=consul.Check.ttl("60s"))
    c.agent.check.ttl_pass("web-alive", notes="fine")

    agent.write("web.hcl", WEB_HCL.replace('tags = ["v1"]', 'tags = ["v2"]'))  # web changes, its check does not
    agent.write("db.json", json.dumps({"service": {"name": "queue", "port": 5672}}))  # db and cache go
    trigger(agent)

    expected = {"web-1", "queue", "api-1"}
    wait_until(lambda: set(agent.services()) == expected, "the reloaded services")
    assert agent.services()["web-1"]["Tags"] == ["v2"]
    checks = c.agent.checks()
    assert set(checks) == {"web-alive", "disk", "service:api-1"}
    # An unchanged check keeps running and keeps what it reported.
    assert (checks["web-alive"]["Status"], checks["web-alive"]["Output"]) == ("passing", "fine")
    wait_until(lambda: not c.catalog.service("db")[1] and catalog_ports(c, "queue") == [5672]
               and c.catalog.service("web")[1][0]["ServiceTags"] == ["v2"], "the catalog after the reload")
    assert catalog_ports(c, "api-svc") == [9000]

    # The config dir emptied: only the API registration is left.
    for f in agent.dir.iterdir():
        f.unlink()
    trigger(agent)
    wait_until(lambda: set(agent.services()) == {"api-1"}, "only the API service")
    assert set(c.agent.checks()) == {"service:api-1"}


def test_malformed_file_on_reload_keeps_the_last_good_config(agent: ConfigAgent) -> None:
    agent.start()
    before = agent.services()
    agent.write("web.hcl", WEB_HCL.replace("port = 80", 'port = "eighty"'))
    agent.write("db.json", json.dumps({"service": {"name": "db2"}}))

    r = agent.reload()
    error = f"{agent.dir / 'web.hcl'}: service.Port: expected an integer"
    assert (r.status_code, r.text) == (500, error + "\n")
    run_buoy("reload", "-http-addr", agent.addr).assert_one_line_error(1, f"Error reloading: {error}")
    _sighup(agent)
    wait_until(lambda: agent.log.read_text().count("reload failed") == 3, "the SIGHUP reload's error in the log")
    assert error in agent.log.read_text()

    # Nothing changed and the agent keeps serving.
    assert agent.services() == before
    agent.c.kv.put("still/serving", "yes")
    assert agent.c.kv.get("still/serving")[1]["Value"] == b"yes"

    agent.write("web.hcl", "{")
    r = agent.reload()
    assert r.status_code == 500 and r.text.startswith(f"{agent.dir / 'web.hcl'}: cannot parse"), r.text
    agent.write("web.hcl", 'service { name = "web" bogus = 1 }')
    r = agent.reload()
    assert (r.status_code, r.text) == (500, f"{agent.dir / 'web.hcl'}: service: unknown field 'bogus'\n")
    assert agent.services() == before

    agent.write("web.hcl", WEB_HCL)
    _http(agent)
    assert set(agent.services()) == {"web-1", "db2"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('service { port = 80 }', "web.hcl: service: Missing service name"),
        ('services { name = "a" }\nservices { name = "b" port = 70000 }',
         "web.hcl: services[1]: Invalid service port 70000: must be between 0 and 65535"),
        ('service { name = "a" check { ttl = "soon" } }',
         "web.hcl: service.Checks[0].TTL: invalid duration 'soon'"),
        ('check { name = "c" http = "http://127.0.0.1:1/" }', "web.hcl: check: Interval is required for HTTP checks"),
        ('service { name = "a" nope = 1 }', "web.hcl: service: unknown field 'nope'"),
        ('srvice { name = "a" }', "web.hcl: unknown key 'srvice'"),
    ],
)
def test_bad_file_at_start_refuses_to_start(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "web.hcl").write_text(text)
    run = run_buoy("agent", "-dev", "-http-port", str(free_port()), "-config-dir", str(tmp_path))
    run.assert_one_line_error(1, f"==> Error: {tmp_path}/{error}")


def test_check_for_an_unknown_service_stops_the_agent(tmp_path: Path) -> None:
    (tmp_path / "check.json").write_text(json.dumps({"check": {"id": "orphan", "ttl": "10s", "service_id": "nope"}}))
    run = run_buoy("agent", "-dev", "-http-port", str(free_port()), "-server-port", str(free_port()),
                   "-dns-port", "-1", "-config-dir", str(tmp_path))
    assert run.code == 1 and "Traceback" not in run.stderr, run
    assert run.stderr.splitlines()[-1] == '==> Error: check "orphan": ServiceID "nope" does not exist'


def test_restart_keeps_api_services_and_reads_config_services_from_the_files(tmp_path: Path) -> None:
    agent = ConfigAgent(tmp_path, "-server", "-bootstrap-expect", "1", "-node", "n1", "-bind", "127.0.0.1",
                        "-data-dir", str(tmp_path / "data"), "-encrypt", KEY)
    agent.write("web.hcl", WEB_HCL)
    try:
        agent.start()
        c = agent.c
        c.agent.service.register("api-svc", service_id="api-1", port=9000, check=consul.Check.ttl("60s"))
        c.agent.check.ttl_warn("service:api-1", notes="slow")
        assert set(agent.services()) == {"web-1", "api-1"}
        agent.stop()

        # While it is down, web leaves the files and db arrives.
        (agent.dir / "web.hcl").unlink()
        agent.write("db.json", json.dumps(DB_JSON))
        agent.start()
        assert set(agent.services()) == {"api-1", "db", "cache"}
        check = c.agent.checks()["service:api-1"]
        assert (check["Status"], check["Output"]) == ("warning", "slow")
        assert "web-alive" not in c.agent.checks() and "disk" not in c.agent.checks()
        wait_until(lambda: not c.catalog.service("web")[1] and catalog_ports(c, "cache") == [6379],
                   "the catalog after the restart")
    finally:
        agent.stop()
