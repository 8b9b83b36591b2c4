"""scripts/system-deps, the set-up `make test` does before the venv.

It runs with a PATH holding links to only some of the tools, so the others are missing as on a fresh
machine; SYSTEM_DEPS_INSTALL=0 makes it report as it does for a user who is not root, and a stand-in apt-get
records what it would install as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_DEPS = REPO / "scripts" / "system-deps"
TEST_TOOLS = ("dig", "openssl", "curl", "ip")


def bin_dir(tmp_path: Path, *tools: str) -> Path:
    """A directory of links to the given tools, the whole PATH of the script under test."""
    d = tmp_path / "bin"
    d.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed here")
        (d / tool).symlink_to(found)
    return d


def fake_apt_get(d: Path) -> Path:
    log = d.parent / "apt-get.log"
    script = d / "apt-get"
    script.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {log}\n')
    script.chmod(0o755)
    return log


def system_deps(path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(SYSTEM_DEPS), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(path), **env})


def test_names_each_missing_tool_with_its_package_and_fails(tmp_path: Path) -> None:
    proc = system_deps(bin_dir(tmp_path, "openssl", "ip"), SYSTEM_DEPS_INSTALL="0")
    assert proc.returncode == 1 and proc.stdout == "", proc
    lines = proc.stderr.splitlines()
    assert lines[:2] == ["system-deps: dig is not installed (Debian package bind9-dnsutils)",
                         "system-deps: curl is not installed (Debian package curl)"], proc.stderr
    sudo = "" if os.geteuid() == 0 else "sudo "
    assert lines[2:] == [f"system-deps: install them with: {sudo}apt-get install --no-install-recommends "
                         "bind9-dnsutils curl"], proc.stderr


def test_silent_and_no_apt_when_everything_is_there(tmp_path: Path) -> None:
    d = bin_dir(tmp_path, *TEST_TOOLS)
    log = fake_apt_get(d)
    proc = system_deps(d)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc
    assert not log.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs only as root")
def test_as_root_installs_what_is_missing_in_one_apt_get_install(tmp_path: Path) -> None:
    d = bin_dir(tmp_path, "openssl", "ip")
    log = fake_apt_get(d)
    proc = system_deps(d)
    assert proc.returncode == 0 and proc.stderr.endswith("\nsystem-deps: installing bind9-dnsutils curl\n"), proc
    assert log.read_text().splitlines() == [
        "noninteractive update -qq",
        "noninteractive install -y -qq --no-install-recommends bind9-dnsutils curl",
    ]


def test_a_group_has_its_own_tools_and_an_unknown_group_is_refused(tmp_path: Path) -> None:
    d = bin_dir(tmp_path)
    proc = system_deps(d, "bench-dns", SYSTEM_DEPS_INSTALL="0")
    assert proc.returncode == 1 and "no-install-recommends dnsperf unbound\n" in proc.stderr, proc
    proc = system_deps(d, "nope")
    assert proc.returncode == 2 and "unknown group 'nope'" in proc.stderr, proc
