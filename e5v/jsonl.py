"""JSON Lines reading shared by the store's manifests and the training data: one numbered object per line.

Both callers report bad rows with their line number and go on (a manifest row is skipped, a training file
is refused with every problem listed), so a row comes back as either a dict or the reason it is not one.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator


def numbered_objects(lines: Iterable[str]) -> Iterator[tuple[int, dict | str]]:
    """(1-based line number, JSON object or error message) for each non-blank line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"invalid JSON: {exc.msg}"
            continue
        yield number, row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"
