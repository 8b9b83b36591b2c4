"""The layering rules as code, for tests/unit/test_layering.py: where Consul's JSON field names may be spelled.

Each Consul object's fields belong in ``buoy/core/structs/``. ``FIELD_BASELINE`` is how many such literals
each module below it still spells; the test fails when a module spells more (or a new module spells any),
and when one spells fewer without the baseline coming down with it, so the count only ever falls.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

# A whole string in Consul's PascalCase, such as "ModifyIndex" or "ServiceTags": a JSON field name.
FIELD = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)*$")
NOT_FIELDS = frozenset({"True", "False"})  # Go's spellings of booleans, which Consul's parsers accept
CHECKED = ("server", "agent", "dns", "http")
BASELINE_FILE = Path(__file__).with_name("consul_fields_baseline.json")


def field_literals(source: str) -> int:
    return sum(1 for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and FIELD.match(node.value) and node.value not in NOT_FIELDS)


def count_tree(root: Path) -> dict[str, int]:
    """Field literals per module of the checked packages under ``root`` (the directory holding ``buoy/``)."""
    counts = {}
    for pkg in CHECKED:
        for path in sorted((root / "buoy" / pkg).rglob("*.py")):
            n = field_literals(path.read_text())
            if n:
                counts[path.relative_to(root).as_posix()] = n
    return counts


def baseline() -> dict[str, int]:
    loaded: dict[str, int] = json.loads(BASELINE_FILE.read_text())
    return loaded


def problems(counts: dict[str, int], allowed: dict[str, int]) -> list[str]:
    out = []
    for module, n in sorted(counts.items()):
        limit = allowed.get(module, 0)
        if n > limit:
            out.append(f"{module}: {n} Consul field literals, {limit} allowed: spell them in buoy/core/structs/")
        elif n < limit:
            out.append(f"{module}: {n} Consul field literals, baseline {limit}: lower it in {BASELINE_FILE.name}")
    out.extend(f"{module}: baseline {limit} but no literals left: drop it from {BASELINE_FILE.name}"
               for module, limit in sorted(allowed.items()) if module not in counts)
    return out
