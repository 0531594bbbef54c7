"""Exporting a loaded text tower for msearch.models.numpy_text, so that later queries need no torch.

Called with torch already loaded (indexing, or a query that had to load the torch tower). The export is
checked before it is kept: the numpy tokenizer must give the torch tokenizer's ids and the numpy tower the
torch tower's embeddings on probe texts; anything else raises TowerExportError and nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from msearch.models.encoder import TextEncoder
from msearch.models.loading import CLIP_IMAGE_KEYS
from msearch.models.numpy_text import (
    CLIP_TEXT,
    EXPORTED_WEIGHTS,
    HF_XLM_ROBERTA,
    TOWER_FILE,
    TOWER_FORMAT,
    NumpyTextEncoder,
    SafetensorsFile,
    exported_tower,
    tower_dir,
)

# Probe texts for the check: several scripts, punctuation, HTML entities, and one cut at the context length.
PROBE_TEXTS = (
    "a satellite image of flooded farmland.",
    "Ships in a harbour &amp; a river's delta, 2 km wide",
    "terres agricoles inondées près de la rivière",
    "被淹没的农田",
    "침수된 농경지",
    "затопленные поля",
    "dense   forest\tand   snow " * 12,
)
# Unit vectors; float32 sums in another order and erf's approximation leave about 1e-6.
MAX_DIFFERENCE = 1e-4


class TowerExportError(RuntimeError):
    """This text tower cannot be run in numpy exactly: its queries go on loading torch."""


def export_numpy_text(encoder: TextEncoder) -> Path:
    """Export `encoder`'s text tower (once per card and weights sha256) and return its folder."""
    card, sha = encoder.identity.card, encoder.identity.weights_sha256
    final = tower_dir(card, sha)
    if exported_tower(card, sha) is not None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    try:
        description = _describe(encoder)
        state = _text_state(encoder.model)
        description["weights"] = _write_weights(state, encoder.weights_path, scratch)
        description["tokenizer"] = _write_tokenizer(encoder.tokenizer, scratch)
        description["check"] = _check(encoder, NumpyTextEncoder(scratch, description))
        (scratch / TOWER_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")
        if final.exists():  # a broken export of these weights
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(scratch, final)
        except OSError:  # fine if a concurrent process finished the same export first
            if exported_tower(card, sha) is None:
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def export_numpy_text_or_say_why(encoder: TextEncoder) -> str | None:
    """Export as above; None when done, else why not (the tower's queries then go on loading torch)."""
    try:
        export_numpy_text(encoder)
    except (TowerExportError, OSError) as exc:  # OSError: a read-only or full cache
        return str(exc)
    return None


def _describe(encoder: TextEncoder) -> dict:
    from open_clip.hf_model import HFTextEncoder, MeanPooler

    text = getattr(encoder.model, "text", encoder.model)  # CustomTextCLIP holds its tower as .text
    base = {
        "format": TOWER_FORMAT,
        "card": encoder.identity.card,
        "weights_sha256": encoder.identity.weights_sha256,
        "embed_dim": encoder.dim,
    }
    if isinstance(text, HFTextEncoder):
        config = text.config
        if config.model_type not in ("xlm-roberta", "roberta") or not isinstance(text.pooler, MeanPooler):
            raise TowerExportError(
                f"a {config.model_type} text tower with {type(text.pooler).__name__} is not implemented in numpy"
            )
        if config.hidden_act != "gelu" or getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise TowerExportError(
                f"activation {config.hidden_act!r} or its position embeddings are not implemented in numpy"
            )
        projection = {nn.Sequential: "mlp", nn.Linear: "linear", nn.Identity: "none"}.get(type(text.proj))
        if projection is None:
            raise TowerExportError(f"a {type(text.proj).__name__} projection is not implemented in numpy")
        return {
            **base,
            "architecture": HF_XLM_ROBERTA,
            "config": {
                "heads": config.num_attention_heads,
                "layers": config.num_hidden_layers,
                "ln_eps": config.layer_norm_eps,
                "pad_id": config.pad_token_id,
                "projection": projection,
            },
        }
    pool = getattr(text, "text_pool_type", getattr(text, "pool_type", None))
    if pool != "argmax" or getattr(text, "attn_mask", None) is None or getattr(text, "cls_emb", None) is not None:
        raise TowerExportError(f"a CLIP text tower pooled by {pool!r}, or not causal, is not implemented in numpy")
    block = text.transformer.resblocks[0]
    activation = type(block.mlp.gelu).__name__
    if activation not in ("GELU", "QuickGELU") or getattr(block.mlp.gelu, "approximate", "none") != "none":
        raise TowerExportError(f"activation {activation} is not implemented in numpy")
    return {
        **base,
        "architecture": CLIP_TEXT,
        "config": {
            "heads": block.attn.num_heads,
            "layers": len(text.transformer.resblocks),
            "ln_eps": block.ln_1.eps,
            "activation": "quick_gelu" if activation == "QuickGELU" else "gelu",
            "projection": "linear" if isinstance(text.text_projection, nn.Linear) else "matrix",
        },
    }


def _text_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The text tower's tensors under the tower's own names, whether `model` is a tower or a whole CLIP."""
    text = getattr(model, "text", model)
    state = (
        text.state_dict()
        if text is not model
        else {k: v for k, v in model.state_dict().items() if not k.startswith(CLIP_IMAGE_KEYS)}
    )
    return {
        k: v.detach().to(torch.float32).contiguous().numpy() for k, v in state.items() if not k.endswith("position_ids")
    }


def _write_weights(state: dict[str, np.ndarray], release: Path, scratch: Path) -> dict:
    """A release in safetensors that holds these tensors under `text.` is used in place (XLM-R's 1.1 GB are
    not copied); otherwise the tensors are written."""
    if release.suffix == ".safetensors":
        try:
            source = SafetensorsFile(release, "text.")
            if all(tuple(source.raw(k).shape) == v.shape for k, v in state.items()):  # values: _check
                return {"file": str(release.resolve()), "prefix": "text.", "bytes": release.stat().st_size}
        except (OSError, ValueError, KeyError):
            pass
    from safetensors.numpy import save_file

    save_file(state, str(scratch / EXPORTED_WEIGHTS))
    return {"file": EXPORTED_WEIGHTS, "prefix": "", "bytes": (scratch / EXPORTED_WEIGHTS).stat().st_size}


def _write_tokenizer(tokenizer, scratch: Path) -> dict:
    import open_clip.tokenizer as oc

    clean = {oc._clean_lower: "lower", oc._clean_whitespace: "whitespace"}.get(tokenizer.clean_fn)
    if clean is None:
        raise TowerExportError(
            f"the tokenizer's cleaning ({tokenizer.clean_fn.__name__}) is not implemented without torch"
        )
    if isinstance(tokenizer, oc.SimpleTokenizer):
        if tokenizer.reduction_fn is not None or len(tokenizer.all_special_ids) != 2:
            raise TowerExportError("a CLIP tokenizer with extra special tokens or a reduction mask is not implemented")
        shutil.copyfile(oc.default_bpe(), scratch / Path(oc.default_bpe()).name)
        return {
            "kind": "clip-bpe",
            "file": Path(oc.default_bpe()).name,
            "clean": clean,
            "context_length": tokenizer.context_length,
        }
    if isinstance(tokenizer, oc.HFTokenizer) and not tokenizer.tokenizer_mode and not tokenizer.strip_sep_token:
        tokenizer.tokenizer.backend_tokenizer.save(str(scratch / "tokenizer.json"))
        return {"kind": "json", "file": "tokenizer.json", "clean": clean, "context_length": tokenizer.context_length}
    raise TowerExportError(f"tokenizer {type(tokenizer).__name__} is not implemented without torch")


def _check(torch_encoder: TextEncoder, numpy_encoder: NumpyTextEncoder) -> dict:
    texts = list(PROBE_TEXTS)
    want_ids = torch_encoder.tokenizer(texts).tolist()
    pad = numpy_encoder.description["config"].get("pad_id", 0)  # open_clip pads CLIP's ids with 0
    got_ids = [row + [pad] * (len(want_ids[0]) - len(row)) for row in numpy_encoder.tokenizer(texts)]
    if got_ids != want_ids:
        raise TowerExportError("the numpy tokenizer's ids differ from open_clip's on the probe texts")
    if [numpy_encoder.truncates(t) for t in texts] != [torch_encoder.truncates(t) for t in texts]:
        raise TowerExportError("the numpy tokenizer truncates other texts than open_clip's")
    difference = float(np.abs(numpy_encoder.encode_texts(texts) - torch_encoder.encode_texts(texts)).max())
    if not difference <= MAX_DIFFERENCE:
        raise TowerExportError(f"the numpy tower's embeddings differ from torch's by {difference:.2g}")
    return {"texts": len(texts), "max_difference": difference}
