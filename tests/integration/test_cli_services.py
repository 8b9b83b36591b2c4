"""`buoy services register/deregister` (flags and definition files) against `buoy agent -dev`, and
`buoy validate` on config files and directories (no agent needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import consul
import pytest

if TYPE_CHECKING:
    from conftest import Run

Buoy = Callable[..., "Run"]
KEY = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="


def test_register_and_deregister_with_flags(buoy: Buoy, c: consul.Consul, prefix: str) -> None:
    run = buoy("services", "register", "-name", f"{prefix}-web", "-id", f"{prefix}-web-1", "-address", "10.0.0.7",
               "-port=8080", "-tag", "a", "-tag", "b", "-meta", "team=edge", "-meta", "tier=1")
    assert (run.code, run.out, run.stderr) == (0, f"Registered service: {prefix}-web\n", ""), run
    svc = c.agent.services()[f"{prefix}-web-1"]
    assert (svc["Service"], svc["Address"], svc["Port"], svc["Tags"], svc["Meta"]) == (
        f"{prefix}-web", "10.0.0.7", 8080, ["a", "b"], {"team": "edge", "tier": "1"})

    run = buoy("services", "deregister", "-id", f"{prefix}-web-1")
    assert (run.code, run.out) == (0, f"Deregistered service: {prefix}-web-1\n"), run
    assert f"{prefix}-web-1" not in c.agent.services()


def test_register_and_deregister_from_files(buoy: Buoy, c: consul.Consul, prefix: str, tmp_path: Path) -> None:
    hcl = tmp_path / "web.hcl"
    hcl.write_text(f'service {{\n  name = "{prefix}-web"\n  port = 80\n  tags = ["v1"]\n'
                   f'  check {{ ttl = "30s" }}\n}}\n')
    js = tmp_path / "more.json"
    js.write_text(json.dumps({"services": [{"name": f"{prefix}-db", "id": f"{prefix}-db-1", "port": 5432},
                                           {"Name": f"{prefix}-cache"}]}))
    # Flags fill what a file leaves unset (-port for the cache) and add tags, as Consul's CombineArgs does.
    run = buoy("services", "register", str(hcl), str(js), "-tag", "extra", "-port", "7000")
    assert run.code == 0, run
    assert run.lines() == [f"Registered service: {prefix}-{n}" for n in ("web", "db", "cache")]
    services = c.agent.services()
    assert services[f"{prefix}-web"]["Tags"] == ["v1", "extra"] and services[f"{prefix}-web"]["Port"] == 80
    assert services[f"{prefix}-cache"]["Port"] == 7000
    assert c.agent.checks()[f"service:{prefix}-web"]["Type"] == "ttl"

    run = buoy("services", "deregister", str(hcl), str(js))
    assert run.lines() == [f"Deregistered service: {prefix}-{n}" for n in ("web", "db-1", "cache")], run
    assert not [s for s in c.agent.services() if s.startswith(prefix)]


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["register"], 2, "Service registration requires at least one argument or flags."),
        (["register", "-name", "x", "f.json"], 2, "Service registration requires arguments or -name, not both."),
        (["deregister"], 2, "Service deregistration requires at least one argument or -id."),
        (["deregister", "-id", "x", "f.json"], 2, "Service deregistration requires arguments or -id, not both."),
        (["deregister", "-id", "nope"], 1, 'Error deregistering service "nope": Unknown service ID "nope". '
                                           "Ensure that the service ID is passed, not the service name."),
        (["register", "-name", "x", "-port", "70000"], 1,
         'Error registering service "x": Invalid service port 70000: must be between 0 and 65535'),
        (["register", "missing.json"], 1, "Error: missing.json: no such config file"),
    ],
)
def test_services_errors(buoy: Buoy, args: list[str], code: int, error: str) -> None:
    buoy("services", *args).assert_one_line_error(code, error)


def test_register_refuses_a_bad_definition_file(buoy: Buoy, tmp_path: Path) -> None:
    bad = tmp_path / "bad.hcl"
    bad.write_text('service { name = "x" port = "eighty" }')
    buoy("services", "register", str(bad)).assert_one_line_error(1, f"Error: {bad}: service.Port: expected an integer")


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """A complete server configuration split over a JSON and an HCL file, with a service and a check."""
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "agent.json").write_text(json.dumps({"server": True, "data_dir": str(tmp_path / "data"), "encrypt": KEY}))
    (d / "web.hcl").write_text('service {\n  name = "web"\n  port = 80\n  check { ttl = "10s" }\n}\n'
                               'check {\n  id = "disk"\n  ttl = "1m"\n}\n')
    return d


def test_validate_a_valid_directory_and_files(buoy_cli: Buoy, conf_dir: Path) -> None:
    run = buoy_cli("validate", str(conf_dir))
    assert (run.code, run.out, run.stderr) == (0, "Configuration is valid!\n", ""), run
    run = buoy_cli("validate", "-quiet", str(conf_dir / "agent.json"), str(conf_dir / "web.hcl"))
    assert (run.code, run.out, run.stderr) == (0, "", ""), run


def test_validate_refuses_an_unknown_key(buoy_cli: Buoy, conf_dir: Path) -> None:
    (conf_dir / "extra.json").write_text(json.dumps({"bogus_key": 1}))
    buoy_cli("validate", str(conf_dir)).assert_one_line_error(
        1, f"Config validation failed: {conf_dir / 'extra.json'}: unknown key 'bogus_key'")


def test_validate_refuses_a_bad_definition(buoy_cli: Buoy, conf_dir: Path) -> None:
    (conf_dir / "web.hcl").write_text('services { name = "a" }\nservices { name = "b" check { ttl = "0s" } }\n')
    buoy_cli("validate", str(conf_dir)).assert_one_line_error(
        1, f"Config validation failed: {conf_dir / 'web.hcl'}: services[1].Checks[0]: TTL must be positive")


def test_validate_script_checks_need_enabling(buoy_cli: Buoy, conf_dir: Path) -> None:
    script = conf_dir / "script.hcl"
    script.write_text('check {\n  id = "s"\n  args = ["true"]\n  interval = "10s"\n}\n')
    run = buoy_cli("validate", str(conf_dir))
    assert run.code == 1 and run.stderr.startswith(f"Config validation failed: {script}: check: Scripts are disabled")
    (conf_dir / "scripts.json").write_text(json.dumps({"enable_local_script_checks": True}))
    assert buoy_cli("validate", str(conf_dir)).code == 0


def test_validate_needs_a_path(buoy_cli: Buoy) -> None:
    buoy_cli("validate").assert_one_line_error(2, "Must specify at least one config file or directory")
