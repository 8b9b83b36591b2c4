"""scripts/system-deps and scripts/check-python, the set-up `make test` and `make run` do before the venv.

system-deps runs with a PATH holding links to only some of the tools, so the others are missing as on a fresh
machine; SYSTEM_DEPS_INSTALL=0 makes it report as it does for a user who is not root, and a stand-in apt-get
records what it would install as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_DEPS = REPO / "scripts" / "system-deps"
CHECK_PYTHON = REPO / "scripts" / "check-python"
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
    d = bin_dir(tmp_path, "openssl", "ip")
    (d / "dig").write_text("")  # a file that cannot run is not the program
    proc = system_deps(d, SYSTEM_DEPS_INSTALL="0")
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


def check_python(py: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK_PYTHON), py], capture_output=True, text=True, timeout=30)


def test_check_python_accepts_this_interpreter() -> None:
    proc = check_python(sys.executable)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc


def test_check_python_names_the_venv_package_when_ensurepip_is_missing(tmp_path: Path) -> None:
    # Debian's python3.11 without python3.11-venv: the interpreter runs, ensurepip does not import.
    py = tmp_path / "python3"
    py.write_text(f'#!/bin/sh\ncase "$2" in *ensurepip*) exit 1;; esac\nexec {sys.executable} "$@"\n')
    py.chmod(0o755)
    proc = check_python(str(py))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"python{version}-venv: apt-get install python{version}-venv ({py} lacks the venv or ensurepip module)"
    ], proc


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_stops_with_one_line_when_the_interpreter_is_missing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # Without the variables of an enclosing make (make test), this make prints no directory lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "run", "PY=/nonexistent/python3", f"VENV={venv}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and proc.stdout == "", proc
    first, *rest = proc.stderr.splitlines()
    assert first == "/nonexistent/python3 not found: apt-get install python3 python3-venv (Buoy needs Python 3.11+), " \
                    "or make PY=...", proc.stderr
    assert all(line.startswith("make: ***") for line in rest), proc.stderr
    assert not venv.exists()
