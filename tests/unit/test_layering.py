"""The house rules that ``make lint`` enforces, and proof that each one bites: Consul's field names only in
core/structs (a ratchet on what is left elsewhere), imports that run one way (import-linter), aiohttp.web only
in http/ (ruff's banned-api), and a client agent that never loads the server's code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.layering import baseline, count_tree, field_literals, problems

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_consul_field_names_stay_in_core_structs() -> None:
    assert problems(count_tree(ROOT), baseline()) == []


def test_a_new_field_literal_is_refused() -> None:
    assert field_literals('row = {"ModifyIndex": 1, "note": "Some text", "x": "ServiceTags"}') == 2
    counts = {"buoy/http/kv.py": 3, "buoy/agent/new.py": 1}
    assert problems(counts, {"buoy/http/kv.py": 3}) == [
        "buoy/agent/new.py: 1 Consul field literals, 0 allowed: spell them in buoy/core/structs/"]
    assert problems({"buoy/http/kv.py": 2}, {"buoy/http/kv.py": 3}) == [
        "buoy/http/kv.py: 2 Consul field literals, baseline 3: lower it in consul_fields_baseline.json"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its lint configuration, to break on purpose."""
    shutil.copytree(ROOT / "buoy", tmp_path / "buoy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_imports_run_one_way(tree: Path) -> None:
    kept = _lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    (tree / "buoy/core/upward.py").write_text("from buoy.http import errors\n")
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "buoy.core is not allowed to import buoy.http" in broken.stdout


def test_aiohttp_web_is_banned_outside_http(tree: Path) -> None:
    (tree / "buoy/agent/web_here.py").write_text("from aiohttp import web\n")
    (tree / "buoy/http/web_fine.py").write_text("from aiohttp import web\n\nAPP = web.Application\n")
    out = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "--select", "TID251", "buoy"], cwd=tree,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "buoy/agent/web_here.py" in out.stdout and "web_fine" not in out.stdout


def test_a_client_agent_never_imports_the_server(tmp_path: Path) -> None:
    """What a client agent loads: the process module, the HTTP app without the server's routes, and a
    running agent's parts (an agent with no reachable server still builds and starts them)."""
    script = textwrap.dedent("""
        import asyncio, sys
        from buoy.config import Config
        from buoy.process import Agent

        async def main():
            cfg = Config(node_name="client-probe", data_dir=sys.argv[1], http_port=0, dns_port=-1,
                         client_addr="127.0.0.1", bind_addr="127.0.0.1", retry_join=["127.0.0.1:1"],
                         encrypt="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
            agent = Agent(cfg)
            task = asyncio.create_task(agent.run())
            for _ in range(100):
                if agent.node is not None:
                    break
                await asyncio.sleep(0.05)
            assert agent.node is not None, "the client agent did not start"
            agent._stop.set()
            await asyncio.wait_for(task, 20)
            loaded = sorted(m for m in sys.modules if m == "buoy.server" or m.startswith("buoy.server."))
            print("LOADED", loaded)

        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout
