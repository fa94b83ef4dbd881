"""Structured metadata filters: a small JSON shape compiled to SQL with every value quoted by us.

Raw SQL ``where`` strings are powerful and fine for the store's owner, but not for network clients: a
filter such as ``length(repeat('ab', 150000000)) > 0`` costs gigabytes, and ``1=1) OR (1=1`` escapes the
clauses it is combined with. The server therefore takes this shape (raw SQL only behind an opt-in flag):

    {"source": "web"}                                   metadata.source equals "web"
    {"year": {"$gte": 2020, "$lt": 2025}}               comparisons: $eq $ne $gt $gte $lt $lte
    {"tag": {"$in": ["cat", "dog"]}}                    membership (at most MAX_IN values)
    {"$or": [{"source": "web"}, {"source": "scan"}]}    any of; {"$and": [...]} all of
    several keys in one object: all of them

Values are strings, numbers or booleans; keys are metadata keys (any text up to MAX_KEY_CHARS). One parser,
two renderings: for LanceDB (``compile_filter``) the SQL only ever calls ``json_get_string(metadata, '<key>')``
(and ``try_cast`` for numbers) with quoted literals; for PostgreSQL (``compile_filter_pg``) every key and value is a bound
parameter and a value of another JSON type never matches (nor errors) instead of being cast; equality on strings
and booleans also gets a containment test (``metadata @> ...``) that the table's GIN index answers.
"""

from __future__ import annotations

import json
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


class _LanceSQL:
    """DataFusion SQL over LanceDB's JSON column: literals quoted inline.

    Numbers and booleans are read as text then converted leniently (``try_cast``, ``'true'``/``'false'``):
    LanceDB's ``json_get_float`` / ``json_get_bool`` fail the whole query when any row holds a string under
    the key, so a filter on a mixed-type key would otherwise be an error. Text-typed numbers ("1990") and
    booleans ("true") therefore match here; the PostgreSQL rendering compares JSON types strictly.
    """

    def getter(self, kind: str, key: str) -> str:
        text = f"json_get_string(metadata, {_quote(key)})"
        return f"try_cast({text} AS DOUBLE)" if kind == "number" else text

    def literal(self, value: Any, where: str) -> str:
        if isinstance(value, bool):
            return "'true'" if value else "'false'"
        if isinstance(value, (int, float)):
            return repr(float(value))
        return _quote(value)

    def index_hint(self, key: str, values: list[Any]) -> str | None:
        return None


class _PostgresSQL:
    """PostgreSQL over a ``jsonb`` column: keys and values are ``%s`` parameters collected in ``params``."""

    CASTS = {"str": ("string", "text"), "number": ("number", "float8"), "bool": ("boolean", "boolean")}

    def __init__(self) -> None:
        self.params: list[Any] = []

    def getter(self, kind: str, key: str) -> str:
        _check_text(key)
        json_type, cast = self.CASTS[kind]
        self.params += [key, key]  # CASE guards the cast: a value of another type is NULL, never an error
        return f"(CASE WHEN jsonb_typeof(metadata -> %s) = '{json_type}' THEN (metadata ->> %s)::{cast} END)"

    def literal(self, value: Any, where: str) -> str:
        if isinstance(value, str):
            _check_text(value)
        self.params.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value)
        return "%s"

    def index_hint(self, key: str, values: list[Any]) -> str | None:
        """``metadata @> {key: value}`` (OR-ed over ``values``): implied by the typed equality it is AND-ed with, so
        it never changes the answer, but the store's GIN index (``jsonb_path_ops``) can find the rows. Strings and
        booleans only: jsonb compares numbers as exact decimals, the typed equality as float8 (which would differ
        past float8's precision)."""
        if not values or not all(isinstance(v, (str, bool)) for v in values):
            return None
        self.params += [json.dumps({key: v}) for v in values]
        return "(" + " OR ".join(["metadata @> %s::jsonb"] * len(values)) + ")"


def compile_filter(spec: Any) -> str:
    """The LanceDB SQL for a structured filter (see the module docstring); raises FilterError."""
    return _compile(spec, "filter", 0, [0], _LanceSQL())


def compile_filter_pg(spec: Any) -> tuple[str, list[Any]]:
    """The PostgreSQL SQL (``%s`` placeholders) and its parameters for a structured filter; raises FilterError."""
    dialect = _PostgresSQL()
    return _compile(spec, "filter", 0, [0], dialect), dialect.params


def _compile(spec: Any, where: str, depth: int, counter: list[int], dialect: Any) -> str:
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f"{where} must be a non-empty object of metadata conditions")
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: $and/$or nested deeper than {MAX_DEPTH}")
    clauses = []
    for key, condition in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise FilterError(f"{where}.{key} must be a non-empty list of filters")
            parts = [_compile(c, f"{where}.{key}[{i}]", depth + 1, counter, dialect)
                     for i, c in enumerate(condition)]
            clauses.append("(" + (" AND " if key == "$and" else " OR ").join(parts) + ")")
        elif key.startswith("$"):
            raise FilterError(f"{where}: unknown operator {key!r} at the top level; use $and / $or")
        else:
            clauses.append(_condition(key, condition, f"{where}.{key}", counter, dialect))
    return "(" + " AND ".join(clauses) + ")"


def _condition(key: str, condition: Any, where: str, counter: list[int], dialect: Any) -> str:
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
            getter = dialect.getter(kind, key)
            listed = ", ".join(dialect.literal(v, where) for v in value)
            clauses.append(f"{getter} IN ({listed})")
            hint = dialect.index_hint(key, value)
        elif op in OPERATORS:
            kind = _kind(value, where)
            if kind == "bool" and op not in ("$eq", "$ne"):
                raise FilterError(f"{where}.{op}: booleans only compare with $eq / $ne")
            getter = dialect.getter(kind, key)
            clauses.append(f"{getter} {OPERATORS[op]} {dialect.literal(value, where)}")
            hint = dialect.index_hint(key, [value]) if op == "$eq" else None
        else:
            raise FilterError(f"{where}: unknown operator {op!r}; use one of {sorted([*OPERATORS, '$in'])}")
        if hint:
            clauses.append(hint)
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


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise FilterError("strings must not contain NUL characters")


def _quote(text: str) -> str:
    """A SQL string literal: single quotes doubled (no backslash escapes in DataFusion's SQL)."""
    _check_text(text)
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
