"""Per-patch embeddings of a tile in the text space: where in a chip a text (or an example tile) matches.

The method is SegEarth-OV's training-free dense inference for CLIP ViTs (Li et al., "SegEarth-OV: Towards
Training-Free Open-Vocabulary Segmentation for Remote Sensing Images", CVPR 2025, arXiv 2410.01768; code
github.com/likyoo/SegEarth-OV), which builds on ClearCLIP (Lan et al., ECCV 2024, arXiv 2407.12442) and
SCLIP (Wang et al., ECCV 2024, arXiv 2312.01597). A CLIP ViT's patch tokens after the last block carry
little of where things are: its last attention mixes every token into every other, and its residual and
feed-forward paths add what the whole image is. The last block is therefore run a second time, changed:

1. attention weights softmax(q qᵀ s) + softmax(k kᵀ s) + softmax(v vᵀ s) per head (s = head_dim^-1/2), applied
   to v and passed through the block's output projection (SegEarth-OV's attention; q-q is ClearCLIP's, q-q +
   k-k SCLIP's);
2. without the block's residual connection and without its feed-forward network (ClearCLIP; SegEarth-OV's
   `ignore_residual=True`);
3. then the model's own ln_post and projection on every token, as on the [CLS] token, and L2 normalisation;
4. global bias alleviation: a patch's score for a vector t is cos(patch, t) - 0.3 cos(cls, t), cls being the
   [CLS] token of the same changed block (SegEarth-OV's `cls_token_lambda=-0.3`, its setting for every
   dataset but one). Within a chip this moves every patch alike; it makes scores of chips comparable.

Left out: SegEarth-OV's SimFeatUp upsampler (a small network trained on other CLIP models' features: there
are no weights for Llama3-MS-CLIP or RS-M-CLIP, and training one is beyond a training-free method), so there
is one value per patch (14 x 14 of 16 px for ViT-B/16, 7 x 7 of 32 px for ViT-B/32); and its sliding window
(a chip is one 224 px window already).

The global embedding is untouched: the blocks before the last run once, and the last block runs as it always
does for the global embedding (`DenseEmbeddings.images`, equal to Encoder.encode_images) beside its changed
copy for the patches. Both published families are open_clip VisionTransformers with token pooling, the only
architecture this supports (DenseUnsupported otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# SegEarth-OV's weight of the [CLS] token's score, subtracted from every patch's (cls_token_lambda = -0.3).
CLS_BIAS_WEIGHT = 0.3


class DenseUnsupported(ValueError):
    """A vision tower whose architecture the dense method does not cover."""


@dataclass
class DenseEmbeddings:
    """Per-patch embeddings of a batch: `patches` (n, rows, cols, d) and `cls` (n, d), unit float32 vectors in
    the text space; `images` (n, d): the global embeddings, exactly as Encoder.encode_images gives them (None
    when not asked for)."""

    patches: np.ndarray
    cls: np.ndarray
    images: np.ndarray | None = None

    def heat(self, vectors: np.ndarray, cls_weight: float = CLS_BIAS_WEIGHT) -> np.ndarray:
        """(n, rows, cols) float32: each patch's score for one vector per tile ((n, d)) or one for all ((d,)):
        cos(patch, v) - cls_weight * cos(cls, v), v normalised here."""
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = np.broadcast_to(vectors, (len(self.patches), vectors.shape[-1]))
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        patch_scores = np.einsum("nrcd,nd->nrc", self.patches, vectors)
        cls_scores = np.einsum("nd,nd->n", self.cls, vectors)
        return (patch_scores - cls_weight * cls_scores[:, None, None]).astype(np.float32)


def patch_size(visual: nn.Module) -> int:
    """The side of a vision tower's square patches, in input pixels (16 for ViT-B/16, 32 for ViT-B/32)."""
    size = visual.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def patch_grid(recipe, patch: int, height: int, width: int) -> tuple[int, tuple[float, ...]]:
    """The patches a (height, width) tile is seen as: (patches per side, affine) with the affine (a, b, c, d,
    e, f) taking a patch's (column, row) to the tile's pixel (x, y) of its upper-left corner (GDAL's order).
    For a 224 px tile it is a scaling by the patch size; for other sizes it follows the recipe's resize and
    centre crop (msearch.models.recipe.input_window)."""
    from msearch.models.recipe import input_window

    left, top, x_step, y_step = input_window(recipe, height, width)
    return recipe.crop // patch, (patch * x_step, 0.0, left, 0.0, patch * y_step, top)


def check_supported(visual: nn.Module) -> None:
    """Raise DenseUnsupported unless `visual` is an open_clip VisionTransformer of the kind both cards use."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise DenseUnsupported(f"per-patch embeddings need an open_clip VisionTransformer, not {type(visual).__name__}")
    blocks = visual.transformer.resblocks
    why = None
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        why = "it pools otherwise than by its [CLS] token"
    elif not visual.transformer.batch_first:
        why = "its transformer is not batch-first"
    elif not isinstance(blocks[-1], ResidualAttentionBlock) or not isinstance(blocks[-1].ls_1, nn.Identity):
        why = "its last block is not a plain residual attention block"
    elif visual.proj is None:
        why = "it has no projection into the text space"
    if why:
        raise DenseUnsupported(f"per-patch embeddings are not available for this vision tower: {why}")


@torch.inference_mode()
def dense_embeddings(encoder, batch: torch.Tensor, with_images: bool = False) -> DenseEmbeddings:
    """Per-patch embeddings of a prepared batch ((n, bands, 224, 224), Encoder.prepare), on the encoder's
    device and in its precision. `with_images`: also the global embeddings (one more run of the last block)."""
    visual = encoder.model.visual
    check_supported(visual)
    batch = batch.to(encoder.device)
    with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=encoder.precision == "bf16"):
        tokens = visual._embeds(batch)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            tokens = block(tokens)
        last = blocks[-1]
        images = None
        if with_images:
            pooled, _ = visual._pool(last(tokens))
            images = _unit(pooled @ visual.proj)
        changed = visual.ln_post(_segearth_attention(last.attn, last.ln_1(tokens))) @ visual.proj
    changed = _unit(changed)
    rows = cols = int(round((changed.shape[1] - 1) ** 0.5))
    return DenseEmbeddings(changed[:, 1:].reshape(len(changed), rows, cols, -1), changed[:, 0], images)


def _segearth_attention(attention: nn.MultiheadAttention, tokens: torch.Tensor) -> torch.Tensor:
    """Step 1 of the module docstring on batch-first tokens (n, length, width): the block's own q, k and v
    projections and output projection, attention weights q-q + k-k + v-v."""
    n, length, width = tokens.shape
    heads = attention.num_heads
    head_dim = width // heads
    scale = head_dim**-0.5
    q, k, v = nn.functional.linear(tokens, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (part.reshape(n, length, heads, head_dim).transpose(1, 2) for part in (q, k, v))
    weights = sum(torch.softmax((part @ part.transpose(-2, -1)) * scale, dim=-1) for part in (q, k, v))
    mixed = (weights @ v).transpose(1, 2).reshape(n, length, width)
    return attention.out_proj(mixed)


def _unit(features: torch.Tensor) -> np.ndarray:
    """Normalised in float32, as Encoder.launch normalises the global embeddings."""
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
