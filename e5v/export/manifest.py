"""``e5v_manifest.json``: what an export directory holds, and the checks that refuse a bad one.

The manifest is written last, after every part is on disk, so a directory without one is an interrupted
export. Loading checks, cheaply and always: the layout version, the e5v version that wrote it, that every
listed file exists with its recorded size. ``verify_manifest(..., checksums=True)`` also re-hashes every
file (SHA-256; seconds per GB), which ``e5v export --verify`` runs after writing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ModelLoadError

MANIFEST = "e5v_manifest.json"
FORMAT = "e5v-openvino"
LAYOUT_VERSION = 1  # bump when the parts' inputs/outputs or file names change
WEIGHTS = ("fp32", "int8", "int4")


@dataclass
class Manifest:
    """Everything needed to load (and to trust) an export directory."""

    e5v_version: str  # version that wrote the IR; another version refuses to load it
    source_model: str  # what was exported (HF id or directory)
    source_revision: str | None  # hub commit hash when known
    weights: str  # fp32 | int8 | int4 (language model; see ``compression``)
    prompt_family: str  # chat wrapper of the language model (llama3, mistral, phi3)
    compression: dict  # NNCF settings per part, e.g. {"language": {"mode": "int4_asym", "group_size": 64, ...}}
    runtime: dict  # OpenVINO CPU compile properties the backend applies (dynamic quantization, precision)
    parts: dict  # role -> file name: vision, language (IR .xml), embeddings (.npy), image_newline (.npy)
    files: dict = field(default_factory=dict)  # file name -> {"size": bytes, "sha256": hex}
    versions: dict = field(default_factory=dict)  # openvino / nncf / torch / transformers used for the export
    export_peak_rss_mb: float | None = None  # measured peak RSS of the export process
    format: str = FORMAT
    layout_version: int = LAYOUT_VERSION


def sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(directory: Path, names: list[str]) -> dict:
    """Size and SHA-256 of each file, for the manifest."""
    return {name: {"size": (directory / name).stat().st_size, "sha256": sha256(directory / name)} for name in names}


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written manifest."""
    path = Path(directory) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def read_manifest(directory: Path) -> Manifest:
    """Parse the manifest; a missing or malformed one is a ModelLoadError saying how to fix it."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no {MANIFEST}: it is not an `e5v export` directory, or the export "
                             "was interrupted; run `e5v export` again")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        return Manifest(**data)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{path} is corrupt ({exc}); run `e5v export` again") from None


def _plain_name(name: object) -> bool:
    """A file name directly inside the export directory: no separators, no '..', not absolute, not hidden."""
    return (isinstance(name, str) and bool(name) and name == Path(name).name and "\\" not in name
            and name not in (".", "..") and not name.startswith("."))


def verify_manifest(directory: Path, current_version: str, *, checksums: bool = False) -> Manifest:
    """Read the manifest and refuse an export this e5v cannot trust; returns the manifest."""
    directory = Path(directory)
    m = read_manifest(directory)
    if m.layout_version != LAYOUT_VERSION:
        raise ModelLoadError(f"{directory} uses export layout v{m.layout_version}; this e5v reads v{LAYOUT_VERSION}. "
                             f"Re-export it with `e5v export --model {m.source_model} ...`")
    if m.e5v_version != current_version:
        raise ModelLoadError(
            f"{directory} was exported by e5v {m.e5v_version}, this is e5v {current_version}: "
            f"the IR contract may differ between versions. Re-export it with this version: "
            f"`e5v export --model {m.source_model} --weights {m.weights} --output {directory}`")
    if m.weights not in WEIGHTS:
        raise ModelLoadError(f"{directory}: unknown weights mode {m.weights!r} in the manifest")
    if not isinstance(m.parts, dict) or not isinstance(m.files, dict):
        raise ModelLoadError(f"{directory}/{MANIFEST} is corrupt (parts and files must be objects); "
                             "run `e5v export` again")
    for name, entry in m.files.items():
        if not _plain_name(name):
            raise ModelLoadError(f"{directory}/{MANIFEST} names a file outside the export directory ({name!r}); "
                                 "refused: an export only holds files of its own")
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) \
                or not isinstance(entry.get("sha256"), str):
            raise ModelLoadError(f"{directory}/{MANIFEST} is corrupt: the entry for {name!r} needs an integer "
                                 "'size' and a 'sha256'; run `e5v export` again")
    missing = [name for name in m.parts.values() if name not in m.files]
    if missing:
        raise ModelLoadError(f"{directory}: manifest lists parts without file records: {missing}")
    for name, entry in m.files.items():
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"{directory} is incomplete: {name} is missing; run `e5v export` again")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ModelLoadError(f"{directory}/{name} is corrupt: {size} bytes, the manifest says {entry['size']}; "
                                 "run `e5v export` again")
        if checksums and sha256(path) != entry["sha256"]:
            raise ModelLoadError(f"{directory}/{name} is corrupt: its SHA-256 differs from the manifest's; "
                                 "run `e5v export` again")
    return m
