"""The torch sub-modules that become OpenVINO IR parts, each with exactly the inputs the encoder feeds.

Two graphs are exported (the token embedding table is saved as a plain array, see ``openvino.py``):

    VisionPart    pixel tiles (N, 3, 336, 336)                        -> projected features (N, 576, D)
    LanguagePart  inputs_embeds (B, L, D), attention_mask (B, L),
                  position_ids (B, L)                                  -> final-norm hidden states (B, L, D)

The anyres packing (unpad + image_newline) stays out of the graphs: it is data-dependent reshaping that
the backend does with transformers' own ``pack_image_features``, so it matches HF by construction.
"""

from __future__ import annotations

import torch
from torch import nn


class VisionPart(nn.Module):
    """CLIP tower cut at ``vision_feature_layer`` + CLS drop + projector.

    ``hidden_states[k]`` of CLIP is the output of its first ``k`` encoder layers (index 0 is the embeddings
    after ``pre_layrnorm``), so for E5-V's layer -2 the last encoder layer is never needed: keeping only
    the first ``k`` layers gives the same features and saves 1/24 of the tower's compute.
    """

    def __init__(self, base: nn.Module, config):
        super().__init__()
        tower = base.vision_tower
        vision = getattr(tower, "vision_model", tower)  # transformers 4.x nests the transformer; 5.x does not
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"multi-layer vision features ({layer}) are not supported by the OpenVINO export")
        n_layers = len(vision.encoder.layers)
        keep = layer if layer >= 0 else n_layers + 1 + layer  # hidden_states index -> number of layers to run
        self.embeddings = vision.embeddings
        self.pre_layrnorm = vision.pre_layrnorm
        self.layers = nn.ModuleList(list(vision.encoder.layers)[:keep])
        self.projector = base.multi_modal_projector
        self.drop_cls = config.vision_feature_select_strategy == "default"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.pre_layrnorm(self.embeddings(pixel_values))  # (N, 1 + 576, Dv)
        for layer in self.layers:
            hidden = layer(hidden, None)  # (N, 1 + 576, Dv)
        if self.drop_cls:
            hidden = hidden[:, 1:]  # (N, 576, Dv)
        return self.projector(hidden)  # (N, 576, D)


def padded_causal_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask (B, 1, L, L): causal, padding masked, and every query row sees at least itself.

    The diagonal is what keeps left-padded rows finite (DESIGN.md §2.7): a padding query row whose keys are
    all masked becomes NaN after softmax in an exported graph, and 0 x NaN then leaks into real tokens in the
    next layer. Letting a padding row attend to itself changes nothing for real tokens (they never attend to
    padding: padding keys stay masked for every real query), so outputs at real positions are unchanged.
    """
    length = attention_mask.shape[1]
    idx = torch.arange(length, device=attention_mask.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L): key j visible to query i when j <= i
    keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, L)
    diagonal = idx[None, :] == idx[:, None]  # (L, L)
    allowed = (causal[None, None] & keys) | diagonal[None, None]  # (B, 1, L, L)
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


class UpcastLinear(nn.Linear):
    """A Linear that keeps its low-precision (bf16/fp16) weight and computes in the input's dtype (f32).

    Traced, this is ``Constant(bf16) -> Convert(f32) -> MatMul``: the weight is stored once, in its source
    precision (memory-mapped, no fp32 copy of the model), NNCF compresses it through the Convert, and the
    compressed graph ends in the same f32 decompression pattern as an fp32 export. That matters: a graph
    traced *in* bf16 (bf16 MatMuls) is not fused into the CPU plugin's FullyConnected with compressed
    weights, so the plugin materialises every int4 weight as bf16 at run time (measured on the 8B: 14 GB
    of RAM instead of ~4, and no int8 compute).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.weight.to(x.dtype), bias)


class LanguagePart(nn.Module):
    """The Llama decoder stack + final RMSNorm, no lm_head, no KV cache, our own padding-safe mask.

    Always computes in f32; bf16/fp16 weights are cast per use (``UpcastLinear``; RMSNorm weights promote).
    transformers passes a ready 4D mask through unchanged, so the mask built here is the one used.
    """

    def __init__(self, language_model: nn.Module):
        super().__init__()
        for module in language_model.modules():
            if type(module) is nn.Linear and module.weight.dtype != torch.float32:
                module.__class__ = UpcastLinear  # same parameters, f32 compute (export only)
        self.language_model = language_model  # transformers LlamaModel (no lm_head)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        embeds = inputs_embeds.float()  # (B, L, D)
        mask = padded_causal_mask(attention_mask, embeds.dtype)  # (B, 1, L, L)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                  use_cache=False)
        return out.last_hidden_state.float()  # (B, L, D)
