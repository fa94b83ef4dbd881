"""Readers for the semantic textual similarity files as distributed (STS-B, SICK, STS12-16).

* ``stsb``: tab-separated, no header, gold score in column 5, sentences in 6 and 7. Some lines carry
  extra source columns (284 of the 1379 test lines); they are ignored. No quote processing: the
  sentences contain bare ``"`` characters, so a CSV reader would merge lines.
* ``sick``: tab-separated with a header; columns found by name (``sentence_A``, ``sentence_B``,
  ``relatedness_score``). ``SICK_test_annotated.txt`` is the test split; the full ``SICK.txt`` has a
  ``SemEval_set`` column and only its TEST rows are used.
* ``sts12-16``: ``STS.input.<name>.txt`` (two tab-separated sentences per line; STS16 adds source
  columns, ignored) paired line by line with ``STS.gs.<name>.txt``; pairs whose gold line is empty
  have no score and are skipped (SentEval does the same). A directory reads every such pair in it.

Sentences are whitespace-normalised (SentEval splits on whitespace and rejoins).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

FORMATS = ("stsb", "sick", "sts12-16")


@dataclass
class STSSubset:
    name: str
    pairs: list[tuple[str, str]]
    gold: list[float]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from None


def _score(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{where}: gold score {value!r} is not a number") from None


def detect_format(path: str | Path) -> str:
    """Guess the format from the file name (``--format`` overrides)."""
    path = Path(path)
    name = path.name
    if path.is_dir() or name.startswith(("STS.input.", "STS.gs.")):
        return "sts12-16"
    if name.startswith("SICK"):
        return "sick"
    if name.startswith("sts-") or name.endswith(".csv"):
        return "stsb"
    raise InputError(f"cannot tell the STS format of {path}; pass --format ({'|'.join(FORMATS)})")


def read_sts(path: str | Path, fmt: str | None = None, limit: int | None = None) -> list[STSSubset]:
    """Read one STS file (or an STS12-16 directory) into subsets of (pairs, gold)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "stsb":
        subsets = [read_stsb(path)]
    elif fmt == "sick":
        subsets = [read_sick(path)]
    elif fmt == "sts12-16":
        subsets = read_sts_pairs(path)
    else:
        raise InputError(f"unknown STS format {fmt!r}; choose one of {FORMATS}")
    if limit is not None:
        subsets = [STSSubset(s.name, s.pairs[:limit], s.gold[:limit]) for s in subsets]
    for s in subsets:
        if not s.pairs:
            raise InputError(f"{s.name}: no scored sentence pairs")
    return subsets


def read_stsb(path: Path) -> STSSubset:
    pairs, gold = [], []
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise InputError(f"{path}:{lineno}: expected >= 7 tab-separated columns (STS-B), found {len(cols)}")
        gold.append(_score(cols[4], f"{path}:{lineno}"))
        pairs.append((_norm(cols[5]), _norm(cols[6])))
    return STSSubset(path.name, pairs, gold)


def read_sick(path: Path) -> STSSubset:
    lines = _lines(path)
    if not lines:
        raise InputError(f"{path} is empty")
    header = lines[0].split("\t")
    try:
        a, b, score = (header.index(c) for c in ("sentence_A", "sentence_B", "relatedness_score"))
    except ValueError:
        raise InputError(f"{path}: header must name sentence_A, sentence_B and relatedness_score") from None
    split = header.index("SemEval_set") if "SemEval_set" in header else None
    pairs, gold = [], []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < len(header):
            raise InputError(f"{path}:{lineno}: expected {len(header)} columns, found {len(cols)}")
        if split is not None and cols[split].strip().upper() != "TEST":
            continue
        gold.append(_score(cols[score], f"{path}:{lineno}"))
        pairs.append((_norm(cols[a]), _norm(cols[b])))
    return STSSubset(path.name, pairs, gold)


def read_sts_pairs(path: Path) -> list[STSSubset]:
    """One ``STS.input.X.txt`` (or ``STS.gs.X.txt``) file, or every input/gold pair in a directory."""
    if path.is_dir():
        inputs = sorted(path.glob("STS.input.*.txt"))
        if not inputs:
            raise InputError(f"{path}: no STS.input.*.txt files")
        with_gold = [p for p in inputs if _gold_path(p).is_file()]
        if not with_gold:
            raise InputError(f"{path}: no STS.input.*.txt has a matching STS.gs.*.txt")
        return [_read_input_gold(p) for p in with_gold]
    if path.name.startswith("STS.gs."):
        path = path.with_name("STS.input." + path.name[len("STS.gs."):])
    if not path.name.startswith("STS.input."):
        raise InputError(f"{path}: expected an STS.input.<name>.txt file or a directory of them")
    return [_read_input_gold(path)]


def _gold_path(input_path: Path) -> Path:
    return input_path.with_name("STS.gs." + input_path.name[len("STS.input."):])


def _read_input_gold(input_path: Path) -> STSSubset:
    gold_path = _gold_path(input_path)
    if not gold_path.is_file():
        raise InputError(f"{input_path}: gold file {gold_path.name} not found beside it")
    inputs, golds = _lines(input_path), _lines(gold_path)
    if len(inputs) != len(golds):
        raise InputError(f"{input_path.name} has {len(inputs)} lines but {gold_path.name} has {len(golds)}")
    pairs, gold = [], []
    for lineno, (line, g) in enumerate(zip(inputs, golds), 1):
        if not g.strip():
            continue  # no gold score for this pair: not evaluated
        cols = line.split("\t")
        if len(cols) < 2:
            raise InputError(f"{input_path}:{lineno}: expected two tab-separated sentences")
        gold.append(_score(g.strip(), f"{gold_path}:{lineno}"))
        pairs.append((_norm(cols[0]), _norm(cols[1])))
    name = input_path.name[len("STS.input."):-len(".txt")]
    return STSSubset(name, pairs, gold)
