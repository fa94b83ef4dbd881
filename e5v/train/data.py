"""Training data: sentence pairs or triplets from CSV, TSV or JSON Lines, checked row by row.

The paper trains on SimCSE's NLI file (columns ``sent0``, ``sent1``, ``hard_neg``). A triplet gives the
anchor, its positive and a hard negative; a pair file (no negative column) trains with in-batch
negatives only. Every bad row is reported with its line number in one error, so a user fixes a file
in one pass instead of one crash per row.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from ..jsonl import numbered_objects

#: How many bad rows one error lists before summarising the rest.
MAX_REPORTED = 10


@dataclass(frozen=True)
class Columns:
    """Which columns hold the anchor, the positive and (optionally) the hard negative."""

    anchor: str = "sent0"
    positive: str = "sent1"
    negative: str | None = "hard_neg"  # None: pairs only


@dataclass(frozen=True)
class Example:
    """One training row; ``line`` is its 1-based line in the file (the record's first line for CSV)."""

    line: int
    anchor: str
    positive: str
    negative: str | None


class DataError(InputError):
    """The training file cannot be used; the message lists the offending lines."""


def read_examples(path: str | Path, columns: Columns = Columns()) -> list[Example]:
    """Read and validate every row. Raises DataError naming each bad line (up to MAX_REPORTED)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        records = _jsonl_records(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        records = _delimited_records(path, "\t" if suffix in (".tsv", ".txt") else ",", columns)
    else:
        raise DataError(f"{path}: unknown data format {suffix!r}; use .csv, .tsv or .jsonl")
    examples, problems = [], []
    for line, record in _decoded(records, path):
        if isinstance(record, str):  # a parse problem reported by the reader
            problems.append(f"line {line}: {record}")
            continue
        example = _example(line, record, columns)
        if isinstance(example, str):
            problems.append(f"line {line}: {example}")
        else:
            examples.append(example)
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{path}: {len(problems)} bad row(s):\n  {shown}{more}")
    if not examples:
        raise DataError(f"{path}: no training rows")
    return examples


def _decoded(records: Iterator[tuple[int, dict | str]], path: Path) -> Iterator[tuple[int, dict | str]]:
    """``records``, with invalid UTF-8 turned into a DataError naming where reading stopped."""
    line = 0
    try:
        for line, record in records:
            yield line, record
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 after line {line} ({exc.reason} at byte {exc.start} of a read "
                        "block); save the file as UTF-8") from None


def has_negatives(examples: list[Example]) -> bool:
    return examples[0].negative is not None


def file_digest(path: str | Path) -> str:
    """sha256 of the data file: resume refuses to continue on a different file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _example(line: int, record: dict, columns: Columns) -> Example | str:
    """The row as an Example, or a one-line description of what is wrong with it."""
    wanted = [columns.anchor, columns.positive] + ([columns.negative] if columns.negative else [])
    values = []
    for name in wanted:
        value = record.get(name)
        if value is None:
            return f"missing column {name!r}"
        if not isinstance(value, str):
            return f"column {name!r} must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"column {name!r} is empty"
        values.append(value)
    return Example(line, values[0], values[1], values[2] if columns.negative else None)


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict | str]]:
    with open(path, encoding="utf-8", errors="strict") as fh:
        yield from numbered_objects(fh)


def _delimited_records(path: Path, delimiter: str, columns: Columns) -> Iterator[tuple[int, dict | str]]:
    """CSV/TSV rows keyed by the header; quoted fields may span lines (the record's first line is reported)."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        _check_header(path, header, columns)
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a field over the csv module's 131,072-character limit
                line, start = start, reader.line_num + 1
                yield line, f"malformed row: {exc}"
                continue
            line, start = start, reader.line_num + 1
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield line, f"expected {len(header)} fields, found {len(row)}"
                continue
            yield line, dict(zip(header, row))


def _check_header(path: Path, header: list[str], columns: Columns) -> None:
    needed = [columns.anchor, columns.positive] + ([columns.negative] if columns.negative else [])
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"{path}: header {header} lacks column(s) {missing}; name them with --anchor-column/"
                        "--positive-column/--negative-column")


def resolve_columns(path: str | Path, anchor: str, positive: str, negative: str | None,
                    negative_given: bool) -> Columns:
    """Pairs or triplets: the negative column is used when present (or required when named explicitly)."""
    if negative is None or negative_given:
        return Columns(anchor, positive, negative)
    first = _first_record_keys(Path(path))
    return Columns(anchor, positive, negative if (first is None or negative in first) else None)


def _first_record_keys(path: Path) -> set[str] | None:
    """Column names of the file (header, or first JSON object's keys); None if unknown."""
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        if suffix in (".csv", ".tsv", ".txt"):
            header = next(csv.reader(fh, delimiter="," if suffix == ".csv" else "\t"), None)
            return set(header) if header else None
        for text in fh:
            if text.strip():
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    return None
                return set(record) if isinstance(record, dict) else None
    return None
