"""Exports of E5-V to other runtimes (OpenVINO IR today), and the manifest that describes an export."""

from __future__ import annotations

from .manifest import MANIFEST, Manifest, read_manifest, verify_manifest

__all__ = ["MANIFEST", "Manifest", "export_openvino", "read_manifest", "verify_manifest"]


def export_openvino(*args, **kwargs):
    """See :func:`e5v.export.openvino.export_openvino` (imported lazily: it needs torch and openvino)."""
    from .openvino import export_openvino as _export

    return _export(*args, **kwargs)
