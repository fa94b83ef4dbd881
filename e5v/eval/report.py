"""One result type for every eval, written as JSON and as a markdown table with the model config beside it.

The numbers are meaningless without knowing what produced them (model, revision, backend, weights
precision, prompts, image mode, LoRA), so the embedding config always travels with the table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class EvalReport:
    """What an eval measured.

    task:    "retrieval", "composed", "i2i" or "sts".
    dataset: what was read (file or directory name).
    table:   row -> metric -> value, e.g. {"text->image": {"R@1": 61.2, ...}}; percentages / Spearman x100.
    counts:  sizes that define the task (queries, gallery, pairs ...).
    config:  the model's embedding config plus eval-specific settings (prompts used, LoRA).
    limit:   the ``--limit`` of a quick run (None for a full run; limited runs are not comparable).
    """

    task: str
    dataset: str
    table: dict[str, dict[str, float]]
    counts: dict[str, int] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    limit: int | None = None
    elapsed_seconds: float = 0.0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=str)

    def to_markdown(self) -> str:
        """Results table, then the sizes and the config as key/value tables."""
        columns: list[str] = []
        for metrics in self.table.values():
            columns += [c for c in metrics if c not in columns]
        out = [f"## e5v eval {self.task}: {self.dataset}", ""]
        if self.limit is not None:
            out += [f"**Quick run limited to {self.limit}: not comparable with full-benchmark numbers.**", ""]
        out += ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for row, metrics in self.table.items():
            cells = [f"{metrics[c]:.2f}" if c in metrics else "" for c in columns]
            out.append(f"| {row} | " + " | ".join(cells) + " |")
        out += ["", "| count | value |", "|---|---:|"]
        out += [f"| {k} | {v} |" for k, v in self.counts.items()]
        out += ["", "| setting | value |", "|---|---|"]
        out += [f"| {k} | {_cell(v)} |" for k, v in _flatten(self.config).items()]
        out += ["", f"{self.created}, {self.elapsed_seconds:.1f} s", ""]
        return "\n".join(out)

    def write(self, output: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.md`` (``output`` may end in .json, .md or have no suffix)."""
        output = Path(output)
        stem = output.with_suffix("") if output.suffix.lower() in (".json", ".md") else output
        stem.parent.mkdir(parents=True, exist_ok=True)
        json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
        json_path.write_text(self.to_json() + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _cell(value: object) -> str:
    """Markdown-safe cell: prompts contain newlines and pipes."""
    text = json.dumps(value) if isinstance(value, str) else str(value)
    return text.replace("|", "\\|")
