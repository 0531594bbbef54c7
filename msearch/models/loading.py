"""Building a card's model with open_clip and loading its weights strictly.

Never random weights: every parameter must come from the checkpoint, and a missing, unexpected or
misshapen tensor is an error that names the file and says what to do.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msearch.models.card import CardError, ModelCard
from msearch.models.hub import ModelNotAvailableError, hub_file, is_cached

if TYPE_CHECKING:  # torch loads with a model, not to find or check its weights (`msearch models`, re-checks)
    import torch
    from torch import nn

# The Llama3-MS-CLIP release stores every open_clip tensor three times, under these prefixes.
MSCLIP_PREFIXES = ("clip_base_model.model.", "image_encoder.model.", "text_encoder.model.")
MSCLIP_EXTRA_KEYS = ("temperature",)
# Keys of an open_clip CLIP state dict that do not belong to the text tower.
CLIP_IMAGE_KEYS = ("visual.", "logit_scale", "logit_bias")
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_TEXT_FILES = ("config.json", "tokenizer.json")
HF_TEXT_OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    weights_path: Path


def load_model(card: ModelCard, checkpoint: str | Path | None = None) -> LoadedModel:
    if card.family == "ms-clip":
        return _load_msclip(card, checkpoint)
    return _load_open_clip(card, checkpoint)


def weights_file(card: ModelCard, checkpoint: str | Path | None = None) -> Path:
    """The weights file load_model reads for `card`, found without building the model: `checkpoint`, or the
    hub file (from the cache; downloaded on first use, as load_model would)."""
    if card.family == "ms-clip":
        return _msclip_weights_path(card, checkpoint)
    return _open_clip_sources(card, checkpoint)[1]


def weights_status(card: ModelCard) -> str:
    """'cached', 'not downloaded' or 'local only', without touching the network."""
    if card.family == "ms-clip":
        if "hub" not in card.weights:
            return "local only"
        return "cached" if is_cached(card.weights["hub"], card.weights["file"]) else "not downloaded"
    repo = _open_clip_repo(card)
    if repo is None:
        return "local only"
    return "cached" if any(is_cached(repo, f) for f in _open_clip_weight_files(card)) else "not downloaded"


def download_weights(card: ModelCard) -> list[Path]:
    """Every hub file that loading `card` needs, fetched into the Hugging Face cache (or found there), so that
    the model then loads with HF_HUB_OFFLINE=1. Returns the weights file and the text tower's files."""
    if card.family == "ms-clip":
        return [_msclip_weights_path(card, None)]
    cfg, weights = _open_clip_sources(card, None)
    paths = [weights]
    if "hf_model_name" in cfg["text_cfg"]:
        folder = _hf_text_folder(cfg["text_cfg"]["hf_model_name"], card)
        paths += [folder / name for name in (*HF_TEXT_FILES, *HF_TEXT_OPTIONAL_FILES) if (folder / name).is_file()]
    return paths


# -- Llama3-MS-CLIP: open_clip architecture, multispectral patch embedding, three-prefix state dict --------


def _load_msclip(card: ModelCard, checkpoint: str | Path | None) -> LoadedModel:
    import open_clip
    from torch import nn

    # Find and read the weights before building the model: building ViT-B/16 takes seconds, and a
    # missing file (offline, not cached) must fail at once.
    path = _msclip_weights_path(card, checkpoint)
    raw = _torch_load(path, card)
    cfg = _architecture_config(card)
    model = open_clip.CLIP(**cfg)
    old = model.visual.conv1
    model.visual.conv1 = nn.Conv2d(
        len(card.input.bands), old.out_channels, kernel_size=old.kernel_size, stride=old.stride, bias=False
    )
    _load_strict(model, msclip_state_dict(raw, path, card), path, card)
    return LoadedModel(model.eval(), _tokenizer(cfg["text_cfg"]), path)


def _msclip_weights_path(card: ModelCard, checkpoint: str | Path | None) -> Path:
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise ModelNotAvailableError(f"{card.name}: weights file {path} does not exist")
        return path
    if "hub" not in card.weights:
        raise ModelNotAvailableError(f"{card.name}: the card names no hub repository; pass --checkpoint PATH")
    return hub_file(card.weights["hub"], card.weights["file"], what=card.name, model=card.name)


def msclip_state_dict(raw: dict[str, torch.Tensor], path: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    """The release's state dict -> an open_clip state dict: strip the first prefix, check that the other
    two hold only duplicates of it, drop `temperature`. Anything else is an unexpected key."""
    if not isinstance(raw, dict):
        raise _mismatch(path, card, f"holds a {type(raw).__name__}, not a state dict")
    main_prefix = MSCLIP_PREFIXES[0]
    state = {key[len(main_prefix) :]: value for key, value in raw.items() if key.startswith(main_prefix)}
    if not state:
        raise _mismatch(path, card, f"has no keys under {main_prefix!r} (is it the Llama3-MS-CLIP release file?)")
    unexpected = []
    for key, value in raw.items():
        if key.startswith(main_prefix) or key in MSCLIP_EXTRA_KEYS:
            continue
        prefix = next((p for p in MSCLIP_PREFIXES[1:] if key.startswith(p)), None)
        inner = key[len(prefix) :] if prefix else None
        if inner is None or inner not in state or state[inner].shape != value.shape:
            unexpected.append(key)
    if unexpected:
        raise _mismatch(path, card, f"has unexpected keys: {_some(unexpected)}")
    return state


def _torch_load(path: Path, card: ModelCard) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ModelNotAvailableError(
            f"{card.name}: cannot read weights file {path} ({type(exc).__name__}: {exc}). The file is truncated "
            f"or not a PyTorch checkpoint: delete it and download again, or pass the right --checkpoint."
        ) from exc


# -- open_clip models: hub repos with open_clip_config.json, open_clip pretrained tags, local folders ------


def _load_open_clip(card: ModelCard, checkpoint: str | Path | None) -> LoadedModel:
    import open_clip

    cfg, weights = _open_clip_sources(card, checkpoint)
    custom_text = bool(cfg.pop("custom_text", False)) or "hf_model_name" in cfg["text_cfg"]
    _resolve_hf_text(cfg["text_cfg"], card)
    model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)
    try:
        open_clip.load_checkpoint(model, str(weights), strict=True)
    except RuntimeError as exc:
        raise _mismatch(
            weights,
            card,
            "fails to load: " + _some([line.strip() for line in str(exc).splitlines()[1:] if line.strip()]),
        ) from exc
    except Exception as exc:
        raise _unreadable(weights, card, exc) from exc
    return LoadedModel(model.eval(), _tokenizer(cfg["text_cfg"]), weights)


def _resolve_hf_text(text_cfg: dict, card: ModelCard) -> None:
    """Point a Hugging Face text tower at its local config and tokenizer (the weights come from the CLIP
    checkpoint, never from the text model's own hub repository)."""
    if "hf_model_name" in text_cfg:
        folder = _hf_text_folder(text_cfg["hf_model_name"], card)
        text_cfg["hf_model_name"] = str(folder)
        text_cfg["hf_tokenizer_name"] = str(folder)
        text_cfg["hf_model_pretrained"] = False


def _tokenizer(text_cfg: dict):
    import open_clip

    context_length = text_cfg.get("context_length", 77)
    if "hf_tokenizer_name" in text_cfg:
        return open_clip.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"],
            context_length=context_length,
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    return open_clip.SimpleTokenizer(context_length=context_length, **text_cfg.get("tokenizer_kwargs", {}))


def _unreadable(weights: Path, card: ModelCard, exc: Exception) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"{card.name}: cannot read weights file {weights} ({type(exc).__name__}: {exc}); delete it and "
        f"download again, or pass the right --checkpoint."
    )


# -- text towers alone: what a text query needs ---------------------------------------------------------


def load_text_model(card: ModelCard, checkpoint: str | Path | None = None) -> LoadedModel:
    """Only the text tower of a card's model, with its tokenizer: the model of `LoadedModel` maps token ids
    to text features exactly as the full model's `encode_text` does (before normalisation).

    A query needs no image tower: it is not built, and of the checkpoint only the text tensors are read
    (memory-mapped and assigned without a copy, so a query touches just the pages it uses)."""
    from open_clip.model import _build_text_tower

    if card.family == "ms-clip":
        weights = _msclip_weights_path(card, checkpoint)
        cfg = _architecture_config(card)
        state = msclip_state_dict(_torch_load(weights, card), weights, card)
        state = {k: v for k, v in state.items() if not k.startswith(CLIP_IMAGE_KEYS)}
    else:
        cfg, weights = _open_clip_sources(card, checkpoint)
        _resolve_hf_text(cfg["text_cfg"], card)
        state = _text_tensors(weights, card)
    with _no_parameter_init():  # every parameter is replaced by the checkpoint's next
        tower = _build_text_tower(cfg["embed_dim"], cfg["text_cfg"], cfg.get("quick_gelu", False))
    expected = tower.state_dict()
    # transformers >= 4.31 no longer stores position ids (open_clip's load_checkpoint drops them likewise)
    state = {k: v for k, v in state.items() if k in expected or not k.endswith("embeddings.position_ids")}
    _load_strict(tower, state, weights, card, assign=True)
    return LoadedModel(tower.eval(), _tokenizer(cfg["text_cfg"]), weights)


def _text_tensors(weights: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    """The `text.` tensors of an open_clip checkpoint with a separate text tower, prefix stripped, read
    lazily: a safetensors file yields just those tensors, a pickle is memory-mapped."""
    prefix = "text."
    try:
        if weights.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as handle:
                return {k[len(prefix) :]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}
        import torch

        raw = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise _unreadable(weights, card, exc) from exc
    raw = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise _mismatch(weights, card, f"holds a {type(raw).__name__}, not a state dict")
    raw = {k.removeprefix("module."): v for k, v in raw.items()}  # as open_clip's load_state_dict does
    return {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}


class _no_parameter_init:
    """Construct modules without initialising their parameters (torch.nn.init becomes a no-op): they are
    about to be replaced by loaded tensors, and initialising a 278M-parameter XLM-R costs seconds."""

    NAMES = (
        "uniform_",
        "normal_",
        "trunc_normal_",
        "constant_",
        "zeros_",
        "ones_",
        "xavier_uniform_",
        "xavier_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "orthogonal_",
    )

    def __enter__(self):
        import torch

        self.saved = {name: getattr(torch.nn.init, name) for name in self.NAMES}
        for name in self.NAMES:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)

    def __exit__(self, *exc):
        import torch

        for name, function in self.saved.items():
            setattr(torch.nn.init, name, function)


def _open_clip_repo(card: ModelCard) -> str | None:
    # A card that names its pretrained tag's hub repository too saves importing open_clip (seconds) here.
    if "hub" in card.weights:
        return card.weights["hub"]
    if "open_clip_pretrained" in card.weights:
        import open_clip

        tag = open_clip.get_pretrained_cfg(card.architecture_name, card.weights["open_clip_pretrained"])
        if not tag or not tag.get("hf_hub"):
            raise CardError(
                f"{card.name}: open_clip has no pretrained tag {card.weights['open_clip_pretrained']!r} "
                f"for {card.architecture_name} on the Hugging Face hub"
            )
        return tag["hf_hub"].strip("/")
    return None


def _open_clip_weight_files(card: ModelCard) -> tuple[str, ...]:
    return (card.weights["file"],) if "file" in card.weights else OPEN_CLIP_WEIGHT_FILES


def _open_clip_sources(card: ModelCard, checkpoint: str | Path | None) -> tuple[dict, Path]:
    """(model config, weights file) from --checkpoint (a folder or a file), else the hub."""
    if checkpoint:
        path = Path(checkpoint)
        if path.is_dir():
            config = path / "open_clip_config.json"
            cfg = _read_open_clip_config(config, card) if config.is_file() else _architecture_config(card)
            found = [
                path / f for f in (*_open_clip_weight_files(card), *OPEN_CLIP_WEIGHT_FILES) if (path / f).is_file()
            ]
            if not found:
                raise ModelNotAvailableError(f"{card.name}: no weights ({', '.join(OPEN_CLIP_WEIGHT_FILES)}) in {path}")
            return cfg, found[0]
        if not path.is_file():
            raise ModelNotAvailableError(f"{card.name}: checkpoint {path} does not exist")
        return _architecture_config(card), path
    repo = _open_clip_repo(card)
    if repo is None:
        raise ModelNotAvailableError(f"{card.name}: the card names no hub repository; pass --checkpoint PATH")
    if "config" in card.weights:
        cfg = _read_open_clip_config(hub_file(repo, card.weights["config"], what=card.name, model=card.name), card)
    else:
        cfg = _architecture_config(card)
    files = _open_clip_weight_files(card)
    for name in files[:-1]:
        found = hub_file(repo, name, what=card.name, required=False, model=card.name)
        if found:
            return cfg, found
    return cfg, hub_file(repo, files[-1], what=card.name, model=card.name)


def _read_open_clip_config(path: Path, card: ModelCard) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["model_cfg"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailableError(
            f"{card.name}: {path} is not an open_clip config with 'model_cfg' ({exc})"
        ) from exc


def _hf_text_folder(name: str, card: ModelCard) -> Path:
    """The folder with the Hugging Face text model's config and tokenizer: a local folder, or the hub
    repository's snapshot in the cache (open_clip would ask the hub for these even with local weights)."""
    if Path(name).is_dir():
        return Path(name)
    what = f"{card.name} (text tower {name})"
    local = (
        f"copy {name}'s {', '.join(HF_TEXT_FILES)} and tokenizer files into a folder and name that folder as "
        f"text_cfg.hf_model_name in the open_clip_config.json of the --checkpoint folder"
    )
    paths = [hub_file(name, f, what=what, model=card.name, local=local) for f in HF_TEXT_FILES]
    for optional in HF_TEXT_OPTIONAL_FILES:
        hub_file(name, optional, what=what, required=False, model=card.name, local=local)
    return paths[0].parent


# -- shared -------------------------------------------------------------------------------------------


def _architecture_config(card: ModelCard) -> dict:
    import open_clip

    if isinstance(card.architecture, dict):
        cfg = copy.deepcopy(card.architecture)
        cfg.pop("name", None)
        return cfg
    cfg = open_clip.get_model_config(card.architecture)
    if cfg is None:
        raise CardError(f"{card.name}: open_clip knows no architecture {card.architecture!r}")
    return cfg


def _load_strict(
    model: nn.Module, state: dict[str, torch.Tensor], path: Path, card: ModelCard, assign: bool = False
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} is {list(state[k].shape)} in the file, the model needs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_some(unexpected)}")
    if misshapen:
        problems.append(f"wrong shapes: {_some(misshapen)}")
    if problems:
        raise _mismatch(path, card, "has " + "; ".join(problems))
    model.load_state_dict(state, strict=True, assign=assign)


def _mismatch(path: Path, card: ModelCard, detail: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"{card.name}: weights file {path} does not match the card ({card.architecture_name}, "
        f"{len(card.input.bands)} input bands): it {detail}. Use the model's release file, or the card that "
        f"matches this file (--model)."
    )


def _some(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
