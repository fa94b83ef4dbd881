"""Structured metadata filters: a small JSON shape compiled to SQL with every value quoted by us.

Raw SQL ``where`` strings are powerful and fine for the store's owner, but not for network clients: a
filter such as ``length(repeat('ab', 150000000)) > 0`` costs gigabytes, and ``1=1) OR (1=1`` escapes the
clauses it is combined with. The server therefore takes this shape (raw SQL only behind an opt-in flag):

    {"source": "web"}                                   metadata.source equals "web"
    {"year": {"$gte": 2020, "$lt": 2025}}               comparisons: $eq $ne $gt $gte $lt $lte
    {"tag": {"$in": ["cat", "dog"]}}                    membership (at most MAX_IN values)
    {"$or": [{"source": "web"}, {"source": "scan"}]}    any of; {"$and": [...]} all of
    several keys in one object: all of them

Values are strings, numbers or booleans; keys are metadata keys (any text up to MAX_KEY_CHARS). The
compiled SQL only ever calls ``json_get_string/float/bool(metadata, '<key>')`` with quoted literals.
"""

from __future__ import annotations

import math
from typing import Any

MAX_CONDITIONS = 64
MAX_DEPTH = 4
MAX_IN = 256
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024
OPERATORS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class FilterError(ValueError):
    """A structured filter is malformed; the message names the offending part."""


def compile_filter(spec: Any) -> str:
    """The SQL for a structured filter (see the module docstring); raises FilterError."""
    counter = [0]
    return _compile(spec, "filter", 0, counter)


def _compile(spec: Any, where: str, depth: int, counter: list[int]) -> str:
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f"{where} must be a non-empty object of metadata conditions")
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: $and/$or nested deeper than {MAX_DEPTH}")
    clauses = []
    for key, condition in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise FilterError(f"{where}.{key} must be a non-empty list of filters")
            parts = [_compile(c, f"{where}.{key}[{i}]", depth + 1, counter) for i, c in enumerate(condition)]
            clauses.append("(" + (" AND " if key == "$and" else " OR ").join(parts) + ")")
        elif key.startswith("$"):
            raise FilterError(f"{where}: unknown operator {key!r} at the top level; use $and / $or")
        else:
            clauses.append(_condition(key, condition, f"{where}.{key}", counter))
    return "(" + " AND ".join(clauses) + ")"


def _condition(key: str, condition: Any, where: str, counter: list[int]) -> str:
    if not key or len(key) > MAX_KEY_CHARS:
        raise FilterError(f"{where}: metadata keys must be 1 to {MAX_KEY_CHARS} characters")
    ops = condition if isinstance(condition, dict) else {"$eq": condition}
    if not ops:
        raise FilterError(f"{where}: an empty condition")
    clauses = []
    for op, value in ops.items():
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise FilterError(f"filter has more than {MAX_CONDITIONS} conditions")
        if op == "$in":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN:
                raise FilterError(f"{where}.$in must be a list of 1 to {MAX_IN} values")
            kinds = {_kind(v, where) for v in value}
            if len(kinds) > 1:
                raise FilterError(f"{where}.$in values must all be of one type (strings, numbers or booleans)")
            kind = kinds.pop()
            listed = ", ".join(_literal(v, where) for v in value)
            clauses.append(f"{_getter(kind, key)} IN ({listed})")
        elif op in OPERATORS:
            kind = _kind(value, where)
            if kind == "bool" and op not in ("$eq", "$ne"):
                raise FilterError(f"{where}.{op}: booleans only compare with $eq / $ne")
            clauses.append(f"{_getter(kind, key)} {OPERATORS[op]} {_literal(value, where)}")
        else:
            raise FilterError(f"{where}: unknown operator {op!r}; use one of {sorted([*OPERATORS, '$in'])}")
    return " AND ".join(clauses)


def _kind(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise FilterError(f"{where}: numbers must be finite")
        return "number"
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            raise FilterError(f"{where}: strings are limited to {MAX_VALUE_CHARS} characters")
        return "str"
    raise FilterError(f"{where}: values must be strings, numbers or booleans, not {type(value).__name__}")


def _getter(kind: str, key: str) -> str:
    function = {"str": "json_get_string", "number": "json_get_float", "bool": "json_get_bool"}[kind]
    return f"{function}(metadata, {_quote(key)})"


def _literal(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value))
    return _quote(value)


def _quote(text: str) -> str:
    """A SQL string literal: single quotes doubled (no backslash escapes in DataFusion's SQL)."""
    if "\x00" in text:
        raise FilterError("strings must not contain NUL characters")
    return "'" + text.replace("'", "''") + "'"


def check_raw_where(where: str) -> str:
    """A raw SQL filter must be one balanced expression, so it cannot close the parentheses it is wrapped in
    and OR its way past the clauses combined with it (``1=1) OR (1=1``). Returns it wrapped."""
    depth, quote = 0, None
    for ch in where:
        if quote:
            if ch == quote:
                quote = None  # a doubled quote closes and reopens: still balanced
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                break
    if depth != 0 or quote:
        raise FilterError(f"the filter {where!r} has unbalanced parentheses or quotes")
    return f"({where})"
