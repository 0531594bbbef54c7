"""Text towers in numpy: what a cold query runs, without importing torch or open_clip.

Importing torch and open_clip takes about 5 s on a 2-core machine, and a query's text is a dozen tokens
through a few hundred million multiply-adds: the imports would be nearly all of a cold query. So a text
tower is exported once per (card, weights sha256), by the torch code that loaded it
(msearch.models.numpy_text_export, at indexing or at the first query), into msearch's cache:

    $MSEARCH_CACHE/text-towers/<card>/<weights sha256>/
        tower.json           architecture, weights file and key prefix, tokenizer, and the check made at export
        text.safetensors     the text tower's tensors (absent when the release file is safetensors: then
                             tower.json names that file, which is memory-mapped as it is)
        <tokenizer file>     CLIP's BPE merges or the Hugging Face tokenizer.json

and run here with memory-mapped weights. Two architectures are implemented, those of the cards msearch
ships: open_clip's CLIP text transformer (pre-LN, causal, pooled at the end-of-text token, projected) and
open_clip's Hugging Face XLM-RoBERTa tower (post-LN, padding-masked, mean-pooled, MLP projection). An export
is written only after its embeddings matched the torch tower's on probe texts, so a tower this module cannot
run exactly is never exported, and its queries stay on torch.

Embeddings agree with the torch tower's to about 1e-6 (float32 sums in another order, and erf by
Abramowitz & Stegun 7.1.26), not bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from msearch.config import cache_dir
from msearch.models.card import EncoderIdentity
from msearch.models.text_tokenizers import ClipBpeTokenizer, JsonTokenizer

TOWER_FORMAT = 1
TOWER_FILE = "tower.json"
EXPORTED_WEIGHTS = "text.safetensors"
CLIP_TEXT = "clip-text"
HF_XLM_ROBERTA = "hf-xlm-roberta"
BATCH = 64  # texts per forward pass: bounds the activations' memory in evaluation's long prompt lists
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}


def towers_dir() -> Path:
    return cache_dir() / "text-towers"


def tower_dir(card: str, weights_sha256: str) -> Path:
    return towers_dir() / card / weights_sha256


class NumpyTextEncoder:
    """Texts -> (n, d) float32 unit vectors, as msearch.models.TextEncoder computes them, in numpy."""

    def __init__(self, folder: Path, description: dict):
        self.folder = folder
        self.description = description
        self.identity = EncoderIdentity(description["card"], description["weights_sha256"])
        weights = description["weights"]
        self.weights = SafetensorsFile(folder / weights["file"], weights["prefix"])
        tokenizer = description["tokenizer"]
        make = ClipBpeTokenizer if tokenizer["kind"] == "clip-bpe" else JsonTokenizer
        self.tokenizer = make(folder / tokenizer["file"], tokenizer["context_length"], tokenizer["clean"])
        run = {CLIP_TEXT: clip_text_forward, HF_XLM_ROBERTA: xlm_roberta_forward}[description["architecture"]]
        self._forward = lambda ids: run(self.weights, description["config"], ids)

    @property
    def dim(self) -> int:
        return int(self.description["embed_dim"])

    @property
    def context_length(self) -> int:
        return self.tokenizer.context_length

    def truncates(self, text: str) -> bool:
        return self.tokenizer.truncates(text)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = np.concatenate(
            [self._forward(self.tokenizer(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
        )
        return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def load_numpy_text_encoder(card: str, weights_sha256: str) -> NumpyTextEncoder | None:
    """The exported tower of this card and weights, or None when there is none or it is no longer whole:
    the caller then loads the torch tower, which exports again."""
    description = exported_tower(card, weights_sha256)
    try:
        return NumpyTextEncoder(tower_dir(card, weights_sha256), description) if description else None
    except (OSError, ValueError, KeyError):  # a damaged tokenizer or weights file
        return None


def exported_tower(card: str, weights_sha256: str) -> dict | None:
    """tower.json of this card and weights if the export is whole (its format, its weights file at the size
    it had, its tokenizer file), else None."""
    folder = tower_dir(card, weights_sha256)
    try:
        description = json.loads((folder / TOWER_FILE).read_text(encoding="utf-8"))
        whole = (
            description.get("format") == TOWER_FORMAT
            and description.get("card") == card
            and description.get("weights_sha256") == weights_sha256
            and (folder / description["weights"]["file"]).stat().st_size == description["weights"]["bytes"]
            and (folder / description["tokenizer"]["file"]).is_file()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return description if whole else None


class SafetensorsFile:
    """The tensors of a safetensors file as read-only numpy views of one memory map: a query reads only
    the pages it uses (of XLM-R's 768 MB embedding table, a dozen rows). Keys are looked up under `prefix`."""

    def __init__(self, path: Path, prefix: str = ""):
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        header.pop("__metadata__", None)
        self.path, self.prefix, self.header = path, prefix, header
        self.data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)

    def raw(self, name: str) -> np.ndarray:
        info = self.header[self.prefix + name]
        start, stop = info["data_offsets"]
        return self.data[start:stop].view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])

    def __getitem__(self, name: str) -> np.ndarray:
        """A tensor as float32: a view when stored so, else converted."""
        return self.as_float32(name, self.raw(name))

    def get(self, name: str) -> np.ndarray | None:
        return self[name] if self.prefix + name in self.header else None

    def rows(self, name: str, index: np.ndarray) -> np.ndarray:
        """Rows of a (large) matrix, reading only those rows."""
        return self.as_float32(name, self.raw(name)[index])

    def as_float32(self, name: str, values: np.ndarray) -> np.ndarray:
        if self.header[self.prefix + name]["dtype"] == "BF16":
            return (values.astype(np.uint32) << 16).view(np.float32)
        return values if values.dtype == np.float32 else values.astype(np.float32)


# -- the two architectures --------------------------------------------------------------------------------


def clip_text_forward(w: SafetensorsFile, config: dict, ids: list[list[int]]) -> np.ndarray:
    """open_clip's CLIP.encode_text (before normalisation). The features are read at the end-of-text token
    (the largest id, `argmax` pooling) and attention is causal, so positions after it change nothing: each
    row runs only up to the longest row's end-of-text token."""
    tokens = _padded(ids, pad=0)
    batch, length = tokens.shape
    x = w.rows("token_embedding.weight", tokens) + w["positional_embedding"][:length]
    mask = np.triu(np.full((length, length), -np.inf, dtype=np.float32), 1)
    act = _quick_gelu if config["activation"] == "quick_gelu" else _gelu
    eps = config["ln_eps"]
    for i in range(config["layers"]):
        p = f"transformer.resblocks.{i}."
        h = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = _linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"])
        q, k, v = np.split(qkv, 3, axis=-1)
        x = x + _linear(
            _attention(q, k, v, config["heads"], mask), w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"]
        )
        h = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = act(_linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]))
        x = x + _linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    x = _layer_norm(x, w["ln_final.weight"], w["ln_final.bias"], eps)
    pooled = x[np.arange(batch), tokens.argmax(axis=-1)]
    if config["projection"] == "linear":
        return _linear(pooled, w["text_projection.weight"], w.get("text_projection.bias"))
    return pooled @ w["text_projection"]


def xlm_roberta_forward(w: SafetensorsFile, config: dict, ids: list[list[int]]) -> np.ndarray:
    """open_clip's HFTextEncoder over transformers' XLMRobertaModel: embeddings with positions counted from
    the padding index, post-LN layers with padding keys masked, mean over real tokens, then the projection.
    Padding never reaches a real token, so rows are padded only to the longest row, not to 77."""
    pad = config["pad_id"]
    tokens = _padded(ids, pad=pad)
    real = tokens != pad
    positions = np.cumsum(real, axis=1) * real + pad
    e = "transformer.embeddings."
    x = (
        w.rows(e + "word_embeddings.weight", tokens)
        + w.rows(e + "position_embeddings.weight", positions)
        + w[e + "token_type_embeddings.weight"][0]
    )
    eps = config["ln_eps"]
    x = _layer_norm(x, w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], eps)
    key_mask = np.where(real, 0.0, np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
    for i in range(config["layers"]):
        p = f"transformer.encoder.layer.{i}."
        q, k, v = (
            _linear(x, w[f"{p}attention.self.{n}.weight"], w[f"{p}attention.self.{n}.bias"])
            for n in ("query", "key", "value")
        )
        a = _linear(
            _attention(q, k, v, config["heads"], key_mask),
            w[p + "attention.output.dense.weight"],
            w[p + "attention.output.dense.bias"],
        )
        x = _layer_norm(
            a + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps
        )
        h = _gelu(_linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
        h = _linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
        x = _layer_norm(h + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    weights = real[..., None].astype(np.float32)
    pooled = (x * weights).sum(axis=1) / weights.sum(axis=1)
    if config["projection"] == "mlp":
        return _linear(_gelu(_linear(pooled, w["proj.0.weight"])), w["proj.2.weight"])
    if config["projection"] == "linear":
        return _linear(pooled, w["proj.weight"])
    return pooled


# -- operations, in float32 as torch computes them -----------------------------------------------------------


def _padded(ids: list[list[int]], pad: int) -> np.ndarray:
    tokens = np.full((len(ids), max(len(row) for row in ids)), pad, dtype=np.int64)
    for row, values in zip(tokens, ids):
        row[: len(values)] = values
    return tokens


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    y = x @ weight.T
    return y + bias if bias is not None else y


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(variance + np.float32(eps)) * weight + bias


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, mask: np.ndarray) -> np.ndarray:
    """Scaled dot-product attention over (batch, length, width) projections split into heads; `mask` is
    added to the scores (-inf or the float minimum where a key must not be seen)."""
    batch, length, width = q.shape

    def split(t):
        return t.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1 / math.sqrt(width // heads)) + mask
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    return (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * Phi(x), as torch.nn.GELU() and transformers' "gelu" compute it."""
    return (0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2))))).astype(np.float32)


def _quick_gelu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(np.float32(-1.702) * x))


def erf(x: np.ndarray) -> np.ndarray:
    """The error function (numpy has none; scipy is not a dependency): Abramowitz & Stegun 7.1.26 in
    float64, absolute error below 1.5e-7, about a float32 rounding step."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-z * z))
