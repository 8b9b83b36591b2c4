"""``?filter=``: Consul's filter expressions (go-bexpr), evaluated against the JSON objects an endpoint
returns.

Supported: ``==``, ``!=``, ``contains``, ``not contains``, ``in``, ``not in``, ``matches``, ``not matches``,
``is empty``, ``is not empty``, combined with ``and``, ``or``, ``not`` and parentheses. Selectors are
dotted field paths (``Service.Meta.env``, ``NodeMeta["rack"]``); values are quoted strings (``"x"`` or
a backquoted string), numbers, ``true``/``false`` or bare words. As in go-bexpr the literal is compared as
the field's type, so ``ServicePort == 80`` and ``ServicePort == "80"`` agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from buoy.core.errors import Invalid

Predicate = Callable[[Any], bool]


class FilterError(Invalid):
    """A malformed expression or an unknown selector."""


_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<op>==|!=|\(|\)|\[|\])|(?P<word>[^\s()\[\]"`=!]+))"""
)
_MISSING = object()


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FilterError(f"Failed to create boolean expression evaluator: syntax error at {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = value[1:-1].replace('\\"', '"') if value[0] == '"' else value[1:-1]
        out.append((kind, value))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def word(self, *choices: str, offset: int = 0) -> bool:
        t = self.peek(offset)
        return t is not None and t[0] == "word" and t[1] in choices

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise FilterError("Failed to create boolean expression evaluator: unexpected end of expression")
        self.i += 1
        return t

    def parse(self) -> Predicate:
        if not self.toks:
            raise FilterError("Failed to create boolean expression evaluator: empty expression")
        pred = self.or_expr()
        extra = self.peek()
        if extra is not None:
            raise FilterError(f"Failed to create boolean expression evaluator: unexpected {extra[1]!r}")
        return pred

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.word("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda obj: any(p(obj) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while self.word("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda obj: all(p(obj) for p in parts))

    def not_expr(self) -> Predicate:
        if self.word("not"):
            self.take()
            inner = self.not_expr()
            return lambda obj: not inner(obj)
        if self.peek() == ("op", "("):
            self.take()
            inner = self.or_expr()
            if self.take() != ("op", ")"):
                raise FilterError("Failed to create boolean expression evaluator: missing ')'")
            return inner
        return self.match()

    def selector(self) -> list[str]:
        kind, first = self.take()
        if kind != "word":
            raise FilterError(f"Failed to create boolean expression evaluator: expected a selector, got {first!r}")
        path = first.split(".")
        while self.peek() == ("op", "["):
            self.take()
            kind, key = self.take()
            if self.take() != ("op", "]"):
                raise FilterError("Failed to create boolean expression evaluator: missing ']'")
            path.append(key)
        return path

    def value(self) -> str:
        kind, v = self.take()
        if kind not in ("str", "word"):
            raise FilterError(f"Failed to create boolean expression evaluator: expected a value, got {v!r}")
        return v

    def match(self) -> Predicate:
        # "<value> [not] in <selector>" starts with a value: look for "in" after it.
        if self.word("in", offset=1) or (self.word("not", offset=1) and self.word("in", offset=2)):
            val = self.value()
            negate = self.word("not")
            if negate:
                self.take()
            self.take()
            path = self.selector()
            return _negate(negate, lambda obj: _contains(_lookup(obj, path), val))
        path = self.selector()
        if self.word("is"):
            self.take()
            negate = self.word("not")
            if negate:
                self.take()
            if not self.word("empty"):
                raise FilterError("Failed to create boolean expression evaluator: expected 'empty'")
            self.take()
            return _negate(negate, lambda obj: _empty(_lookup(obj, path)))
        negate = self.word("not")
        if negate:
            self.take()
        kind, op = self.take()
        val = self.value()
        if op == "==" and not negate:
            return lambda obj: _equal(_lookup(obj, path), val)
        if op == "!=" and not negate:
            return lambda obj: not _equal(_lookup(obj, path), val)
        if op == "contains":
            return _negate(negate, lambda obj: _contains(_lookup(obj, path), val))
        if op == "in":
            return _negate(negate, lambda obj: _contains(val, _lookup(obj, path)))
        if op == "matches":
            try:
                rx = re.compile(val)
            except re.error as e:
                raise FilterError(f"Failed to create boolean expression evaluator: bad regex: {e}") from None
            return _negate(negate, lambda obj: _text(_lookup(obj, path)) is not None
                           and rx.search(_text(_lookup(obj, path)) or "") is not None)
        raise FilterError(f"Failed to create boolean expression evaluator: unknown operator {op!r}")


def _negate(negate: bool, pred: Predicate) -> Predicate:
    return (lambda obj: not pred(obj)) if negate else pred


def _lookup(obj: Any, path: list[str]) -> Any:
    for i, part in enumerate(path):
        if isinstance(obj, list) and i > 0:
            # A selector through a list of objects (Checks.Status) yields the list of their fields.
            return [v for v in (_lookup(x, path[i:]) for x in obj if isinstance(x, dict)) if v is not _MISSING]
        if isinstance(obj, dict):
            if part in obj:
                obj = obj[part]
                continue
            if i == 0 or not isinstance(obj, dict):
                raise FilterError(f'Selector "{".".join(path)}" is not valid')
            return _MISSING  # a map key that is absent (Meta, NodeMeta): no value
        raise FilterError(f'Selector "{".".join(path)}" is not valid')
    return obj


def _text(v: Any) -> str | None:
    if v is _MISSING or v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _equal(field: Any, literal: str) -> bool:
    return _text(field) == literal


def _contains(container: Any, literal: Any) -> bool:
    if isinstance(container, list):
        return any(_text(x) == literal for x in container)
    if isinstance(container, dict):
        return literal in container
    if isinstance(container, str):
        return str(literal) in container
    return False


def _empty(v: Any) -> bool:
    return v is _MISSING or v is None or v == "" or v == [] or v == {}


def compile_filter(text: str) -> Predicate:
    """A predicate over one JSON object; raises FilterError (a 400) for a malformed expression."""
    return _Parser(text).parse()
