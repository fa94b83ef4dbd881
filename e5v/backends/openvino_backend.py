"""OpenVINO backend: runs an ``e5v export`` directory on CPU (fp32, or int8/int4 weights with int8 compute).

Same three primitives as the torch backend, so prompts, batching, padding, the image-token merge and
pooling are the encoder's, unchanged. Parts (see ``e5v/export/parts.py``):

    embed_tokens    numpy gather from a memory-mapped table (only the rows used are ever read)
    image_features  vision IR on the real tiles, then transformers' own anyres packing in torch
    hidden_states   language IR: inputs_embeds + mask + positions -> final-norm hidden states

The export's manifest is checked before anything is compiled (version, completeness, sizes). Loading ends
with a 1-token warm-up that makes the CPU plugin pack its weights and drops the mapped IR pages it no
longer reads (``mapped_pages.py``): the 8B int4 model then peaks at ~6.5 GB RSS instead of ~10.4 GB.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ModelLoadError, require

#: Tiles per vision-IR call: bounds activation memory for many large images; the compute is per tile anyway.
VISION_CHUNK = 8


def _warn_without_int8_units() -> None:
    from .cpu_features import has_int8_dot_product

    if has_int8_dot_product() is False:
        warnings.warn("this CPU has no int8 dot-product instructions (AVX-512 VNNI / AMX): OpenVINO runs int8/int4 "
                      "weights at about fp32 speed here; they still save memory (docs/openvino.md, 'Which CPUs get "
                      "int8 compute')", RuntimeWarning, stacklevel=4)


class OpenVINOBackend:
    """An exported E5-V on the OpenVINO CPU plugin."""

    name = "openvino"

    def __init__(self, directory: Path, manifest: Any, config: Any, core: Any, properties: dict):
        parts = manifest.parts
        self.directory = directory
        self.manifest = manifest
        self.weights = manifest.weights
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.config = config  # LlavaNextConfig (from the export dir)
        self.properties = properties  # CPU compile properties actually applied
        try:
            self.table = np.load(directory / parts["embeddings"], mmap_mode="r")  # (V, D) fp32 or fp16
            self.image_newline = torch.from_numpy(np.load(directory / parts["image_newline"]))  # (D,)
            self.vision = core.compile_model(core.read_model(directory / parts["vision"]), "CPU", properties)
            self.language = core.compile_model(core.read_model(directory / parts["language"]), "CPU", properties)
        except Exception as exc:  # OpenVINO/numpy raise RuntimeError/ValueError on damaged files
            raise ModelLoadError(f"cannot load the OpenVINO export in {directory}: {exc}; "
                                 "run `e5v export` again") from exc
        # pack_image_features only reads ``self.config``: call transformers' method on this stand-in
        self._packer = SimpleNamespace(config=config)
        self._warm_up()

    def _warm_up(self) -> None:
        """One tiny inference per part, dropping the mapped .bin pages as the plugin packs the weights.

        The CPU plugin packs weights into its own memory on the first inference; the memory-mapped IR
        originals are then dead weight in RSS (a second copy of the model). Releasing them while packing
        bounds the *peak* (see ``mapped_pages.py``); after this, the .bin is not read again.
        """
        from .mapped_pages import ReleaseWhile

        parts = self.manifest.parts
        size = int(self.config.vision_config.image_size)
        with ReleaseWhile(self.directory / parts["vision"].replace(".xml", ".bin")):
            self.vision(np.zeros((1, 3, size, size), np.float32))
        dim = int(self.config.text_config.hidden_size)
        with ReleaseWhile(self.directory / parts["language"].replace(".xml", ".bin")):
            self.language([np.zeros((1, 1, dim), np.float32), np.ones((1, 1), np.int64), np.zeros((1, 1), np.int64)])

    @classmethod
    def load(cls, components: Any, *, device: str | None = None, dtype: str | torch.dtype | None = None,
             lora: str | None = None, max_memory: str | int | None = None) -> "OpenVINOBackend":
        ov = require("openvino", "openvino")
        from ..export.manifest import verify_manifest

        if device not in (None, "cpu", "CPU"):
            raise ValueError(f"the openvino backend runs on the CPU; got device={device!r}")
        if dtype is not None:
            raise ValueError("the openvino backend's precision is fixed at export (`e5v export --weights`); "
                             "do not pass dtype")
        if lora is not None:
            raise ValueError("LoRA adapters cannot be applied to an OpenVINO export: merge it first "
                             "(`e5v merge`), then export the merged model")
        directory = Path(components.path)
        manifest = verify_manifest(directory, __version__)
        if manifest.weights != "fp32":
            _warn_without_int8_units()
        properties = dict(manifest.runtime)
        properties.update(json.loads(os.environ.get("E5V_OPENVINO_CONFIG", "{}")))  # expert override
        return cls(directory, manifest, components.config, ov.Core(), properties)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        # (B, L) -> (B, L, D); fp16 tables (int exports) are widened to fp32
        rows = np.asarray(self.table[ids.cpu().numpy()], dtype=np.float32)
        return torch.from_numpy(rows)

    def image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor, mode: str) -> list[torch.Tensor]:
        """Projected features per image: (n_i, D), anyres packed exactly as transformers does, or base view."""
        from transformers.models.llava_next.modeling_llava_next import LlavaNextModel, image_size_to_num_patches

        # pixel_values: (N, max_tiles, 3, 336, 336), padded with empty tiles; image_sizes: (N, 2) as (H, W)
        if mode == "base":
            return list(self._vision(pixel_values[:, 0]))  # (576, D) each
        config = self.config
        counts = [image_size_to_num_patches(image_size=size, grid_pinpoints=config.image_grid_pinpoints,
                                            patch_size=config.vision_config.image_size) for size in image_sizes]
        tiles = torch.cat([pv[:n] for pv, n in zip(pixel_values, counts)])  # (sum n, 3, 336, 336)
        per_image = torch.split(self._vision(tiles), counts)  # [(n_i, 576, D)]
        packed, _ = LlavaNextModel.pack_image_features(self._packer, per_image, image_sizes,
                                                       config.vision_feature_select_strategy, self.image_newline)
        return list(packed)

    def _vision(self, tiles: torch.Tensor) -> torch.Tensor:
        # (T, 3, 336, 336) -> (T, 576, D), in chunks of VISION_CHUNK tiles
        pixels = tiles.float().numpy()
        out = [self.vision(pixels[i:i + VISION_CHUNK])[0] for i in range(0, len(pixels), VISION_CHUNK)]
        # Free the vision part's scratch before the language part runs: 0.06 GB of the ~0.12 GB that 5 tiles
        # leave behind (measured), off the peak of every image batch, for ~1% of the vision call.
        self.vision.release_memory()
        return torch.from_numpy(np.concatenate(out))

    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> torch.Tensor:
        # (B, L, D) -> (B, L, D) final-norm hidden states; the IR builds a padding-safe causal mask itself
        result = self.language([embeds.float().numpy(), attention_mask.long().numpy(),
                                position_ids.long().numpy()])
        return torch.from_numpy(np.asarray(result[0]))
