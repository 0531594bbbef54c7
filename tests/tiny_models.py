"""Tiny models of both published families, saved in the real release formats and key layouts, so that the
code under test is the code that loads the real weights.

- Llama3-MS-CLIP: an open_clip CLIP with a 10-channel conv1, its state dict stored three times over under
  the release's prefixes (sharing storage, as torch.save of the release does) plus `temperature`, in a `.pt`.
- RS-M-CLIP: an open_clip CustomTextCLIP with an XLM-R text tower, as the hub folder has it:
  open_clip_config.json + open_clip_model.safetensors, and `xlm-roberta-base` as its own repository with
  config.json and a tokenizer built in the test from a tiny SentencePiece-style vocabulary.
Both are put into a Hugging Face cache laid out as huggingface_hub writes it (refs/, blobs/, snapshots/).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from msearch.models.card import get_card
from msearch.models.loading import MSCLIP_PREFIXES

TINY_MSCLIP_REPO = "msearch-test/tiny-ms-clip"
TINY_MSCLIP_CFG = {
    "name": "tiny-ViT",
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
RSMCLIP_REPO = "joaodaniel/RS-M-CLIP"
XLMR_REPO = "xlm-roberta-base"
TINY_RSMCLIP_CFG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {
        "hf_model_name": "xlm-roberta-base",
        "hf_tokenizer_name": "xlm-roberta-base",
        "hf_pooler_type": "mean_pooler",
        "hf_proj_type": "mlp",
    },
}
# Words of the ten languages, so that the tiny tokenizer splits queries into words, not only characters.
TINY_WORDS = (
    "a the of satellite image view showing forest river lake sea farmland flooded town city snow road field "
    "imagem de satélite floresta rio cidade campo inundado imagen bosque ciudad image forêt rivière ville "
    "Satellitenbild Wald Fluss Stadt satellietbeeld bos rivier stad immagine foresta fiume città "
    "卫星 图像 森林 河流 城市 위성 이미지 숲 강 도시 спутниковый снимок лес река город"
).split()


def put_in_hf_cache(cache: Path, repo_id: str, files: dict[str, Path | bytes], commit: str | None = None) -> Path:
    """Lay files out as huggingface_hub's cache does; returns the snapshot folder."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name, content in files.items():
        sha = hashlib.sha256()
        if isinstance(content, bytes):
            sha.update(content)
        else:
            with open(content, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 22), b""):
                    sha.update(chunk)
        blob = repo_dir / "blobs" / sha.hexdigest()
        if isinstance(content, bytes):
            blob.write_bytes(content)
        else:
            shutil.copyfile(content, blob)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(Path("../../blobs") / blob.name)
    return snapshot


def msclip_release_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """An open_clip model's state dict in the Llama3-MS-CLIP release layout."""
    state = model.state_dict()
    release = {prefix + key: value for prefix in MSCLIP_PREFIXES for key, value in state.items()}
    release["temperature"] = torch.tensor(0.07)
    return release


def build_msclip(cfg: dict, bands: int = 10, seed: int = 0) -> nn.Module:
    import open_clip

    torch.manual_seed(seed)
    cfg = copy.deepcopy(cfg)
    cfg.pop("name", None)
    model = open_clip.CLIP(**cfg)
    old = model.visual.conv1
    model.visual.conv1 = nn.Conv2d(bands, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, bias=False)
    return model


def tiny_msclip_card(card_dir: Path) -> Path:
    """A user card file for the tiny MS-CLIP: the real card's recipe with the tiny architecture."""
    real = get_card("llama3-ms-clip-base")
    data = {
        "name": "tiny-ms-clip",
        "description": "tiny test model of the Llama3-MS-CLIP family",
        "family": "ms-clip",
        "architecture": TINY_MSCLIP_CFG,
        "weights": {"hub": TINY_MSCLIP_REPO, "file": "Llama3_MS_CLIP_weights.pt"},
        "languages": ["en"],
        "embed_dim": TINY_MSCLIP_CFG["embed_dim"],
        "input": {
            "bands": list(real.input.bands),
            "scale": real.input.scale,
            "remove_offset": real.input.remove_offset,
            "resize": real.input.resize,
            "crop": real.input.crop,
            "interpolation": real.input.interpolation,
            "mean": list(real.input.mean),
            "std": list(real.input.std),
        },
    }
    path = card_dir / "tiny-ms-clip.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def save_tiny_msclip(hf_cache: Path) -> Path:
    """The tiny MS-CLIP release file, in the cache under TINY_MSCLIP_REPO; returns the cached path."""
    model = build_msclip(TINY_MSCLIP_CFG)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Llama3_MS_CLIP_weights.pt"
        torch.save(msclip_release_state_dict(model), path)
        snapshot = put_in_hf_cache(hf_cache, TINY_MSCLIP_REPO, {"Llama3_MS_CLIP_weights.pt": path})
    return snapshot / "Llama3_MS_CLIP_weights.pt"


def tiny_xlmr_files(folder: Path) -> dict[str, Path]:
    from transformers import XLMRobertaConfig, XLMRobertaTokenizer

    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(dict.fromkeys(TINY_WORDS))]
    chars = sorted({c for w in TINY_WORDS for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    vocab = specials + words + [(c, -8.0) for c in chars] + [("\u2581", -9.0), ("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=vocab)
    tokenizer.save_pretrained(folder)
    config = XLMRobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    config.save_pretrained(folder)
    return {p.name: p for p in folder.iterdir() if p.is_file()}


def save_tiny_rsmclip(hf_cache: Path, seed: int = 0, full_size: bool = False) -> Path:
    """The tiny RS-M-CLIP hub folder and its xlm-roberta-base dependency, in the cache. `full_size`: random
    weights at the release's sizes instead (xlm-roberta-base and ViT-B/32, 1.46 GB; for benchmarks), still
    with the tiny tokenizer."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    model_cfg = TINY_RSMCLIP_CFG
    with tempfile.TemporaryDirectory() as tmp:
        xlmr = Path(tmp) / "xlmr"
        xlmr.mkdir()
        files = tiny_xlmr_files(xlmr)
        if full_size:
            model_cfg = open_clip.get_model_config("xlm-roberta-base-ViT-B-32")
            XLMRobertaConfig(  # xlm-roberta-base's config.json
                vocab_size=250002,
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                intermediate_size=3072,
                max_position_embeddings=514,
                type_vocab_size=1,
                layer_norm_eps=1e-5,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
            ).save_pretrained(xlmr)
        put_in_hf_cache(hf_cache, XLMR_REPO, files)
        cfg = copy.deepcopy(model_cfg)
        cfg["text_cfg"]["hf_model_name"] = str(xlmr)
        cfg["text_cfg"]["hf_model_pretrained"] = False
        torch.manual_seed(seed)
        model = open_clip.CustomTextCLIP(**cfg)
        weights = Path(tmp) / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        config = {
            "model_cfg": model_cfg,
            "preprocess_cfg": {
                "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711],
            },
        }
        return put_in_hf_cache(
            hf_cache,
            RSMCLIP_REPO,
            {"open_clip_config.json": json.dumps(config).encode(), "open_clip_model.safetensors": weights},
        )
