"""Request bodies read the way Consul's Go decoder reads them: field names match case-insensitively (and
``snake_case`` matches ``PascalCase``), every value is type-checked, and every problem is one
:class:`DecodeFailed` that names the field."""

from __future__ import annotations

import builtins
import json
from typing import Any

from buoy.core.errors import Invalid
from buoy.durations import parse_duration

DECODE_FAILED = "Request decode failed: "


def json_value(raw: bytes | str) -> Any:
    """``json.loads``, with Go's "exceeded max depth" (a ValueError) for nesting deeper than the decoder can
    follow, which would otherwise escape as a RecursionError and an internal error."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("exceeded max depth") from None


class DecodeFailed(Invalid):
    """A body that does not decode; ``detail`` is the part after Consul's prefix (``Service.Port: ...``),
    for callers that report it in their own words (a config file, the legacy intentions API)."""

    def __init__(self, detail: str) -> None:
        super().__init__(DECODE_FAILED + detail)
        self.detail = detail

    def __reduce__(self) -> tuple[type[DecodeFailed], tuple[str]]:
        return type(self), (self.detail,)


class Fields:
    """A JSON object read the way Go's decoder reads it: field names match case-insensitively.

    ``allowed`` lists the field names Consul's struct has; anything else is refused, as Consul refuses
    unknown fields on the endpoints that use strict decoding.
    """

    def __init__(self, data: Any, what: builtins.str, allowed: set[builtins.str] | None = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DecodeFailed(f"{what}: expected a JSON object")
        self.what = what
        self._data = {str(k).lower().replace("_", ""): v for k, v in data.items()}
        if allowed is not None:
            known = {a.lower().replace("_", "") for a in allowed}
            for k in data:
                if str(k).lower().replace("_", "") not in known:
                    raise DecodeFailed(f"{what}: unknown field {k!r}")

    def has(self, name: builtins.str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: builtins.str, default: Any = None) -> Any:
        v = self._data.get(name.lower().replace("_", ""))
        return default if v is None else v

    def _typed(self, name: builtins.str, kinds: type | tuple[type, ...], label: builtins.str, default: Any) -> Any:
        v = self.raw(name)
        if v is None:
            return default
        if isinstance(v, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise DecodeFailed(f"{self.what}.{name}: expected {label}")
        if not isinstance(v, kinds):
            raise DecodeFailed(f"{self.what}.{name}: expected {label}")
        return v

    def str(self, name: builtins.str, default: builtins.str = "") -> builtins.str:
        return self._typed(name, str, "a string", default)

    def int(self, name: builtins.str, default: builtins.int = 0) -> builtins.int:
        return self._typed(name, int, "an integer", default)

    def bool(self, name: builtins.str, default: builtins.bool = False) -> builtins.bool:
        return self._typed(name, bool, "a boolean", default)

    def str_list(self, name: builtins.str) -> list[builtins.str]:
        v = self._typed(name, list, "a list of strings", [])
        if not all(isinstance(x, str) for x in v):
            raise DecodeFailed(f"{self.what}.{name}: expected a list of strings")
        return list(v)

    def str_map(self, name: builtins.str) -> dict[builtins.str, builtins.str]:
        v = self._typed(name, dict, "an object of strings", {})
        if not all(isinstance(x, str) for x in v.values()):
            raise DecodeFailed(f"{self.what}.{name}: expected an object of strings")
        return dict(v)

    def checks(self) -> list[Any]:
        """The embedded ``Check`` object followed by the ``Checks`` list (Consul accepts both at once)."""
        found = [self.obj("Check")] if self.obj("Check") is not None else []
        more = self.raw("Checks", [])
        if not isinstance(more, list):
            raise DecodeFailed(f"{self.what}.Checks: expected a list")
        return found + more

    def obj(self, name: builtins.str) -> Any:
        return self._typed(name, dict, "an object", None)

    def duration(self, name: builtins.str, default: float | None = None) -> float | None:
        """A Go duration string, or a number of nanoseconds (how Go encodes time.Duration)."""
        v = self.raw(name)
        if v is None:
            return default
        if isinstance(v, bool):
            raise DecodeFailed(f"{self.what}.{name}: expected a duration")
        if isinstance(v, int | float):
            return v / 1e9
        if isinstance(v, str):
            try:
                return parse_duration(v)
            except ValueError:
                raise DecodeFailed(f"{self.what}.{name}: invalid duration {v!r}") from None
        raise DecodeFailed(f"{self.what}.{name}: expected a duration")
