"""Model cards: everything that defines an encoder, kept as data (one JSON file per model).

Built-in cards live in `msearch/models/cards/`. Users add their own as JSON files in a card folder
(`$MSEARCH_CARDS`, else ~/.config/msearch/cards) or name a card file's path wherever a model is asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from msearch.config import user_card_dirs
from msearch.schema.bands import canonical_band

FAMILIES = ("ms-clip", "open_clip")
SCALE_KINDS = ("dn", "linear")


class CardError(ValueError):
    """A card that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class InputRecipe:
    """How Sentinel-2 pixels become the encoder's input tensor (applied by `msearch.models.recipe`)."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: dict[str, Any] = field(default_factory=lambda: {"kind": "dn"})
    remove_offset: bool = True
    resize: int = 224
    crop: int = 224
    interpolation: str = "bicubic"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "InputRecipe":
        try:
            recipe = cls(
                bands=tuple(canonical_band(b) for b in data["bands"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                scale=dict(data.get("scale", {"kind": "dn"})),
                remove_offset=bool(data.get("remove_offset", True)),
                resize=int(data.get("resize", 224)),
                crop=int(data.get("crop", 224)),
                interpolation=str(data.get("interpolation", "bicubic")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CardError(f"{where}: bad 'input' section: {exc}") from exc
        n = len(recipe.bands)
        if len(recipe.mean) != n or len(recipe.std) != n:
            raise CardError(f"{where}: 'input' has {n} bands but {len(recipe.mean)} means and {len(recipe.std)} stds")
        if recipe.scale.get("kind") not in SCALE_KINDS:
            raise CardError(f"{where}: input scale kind must be one of {SCALE_KINDS}, got {recipe.scale!r}")
        if recipe.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise CardError(f"{where}: unknown interpolation {recipe.interpolation!r}")
        return recipe


@dataclass(frozen=True)
class ModelCard:
    name: str
    description: str
    family: str
    # An open_clip architecture name ("ViT-B-16") or an inline open_clip model config.
    architecture: str | dict[str, Any]
    weights: dict[str, Any]
    languages: tuple[str, ...]
    embed_dim: int
    input: InputRecipe
    source: str = "built-in"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "ModelCard":
        missing = [
            k for k in ("name", "family", "architecture", "weights", "languages", "embed_dim", "input") if k not in data
        ]
        if missing:
            raise CardError(f"model card {source} lacks {', '.join(missing)}")
        if data["family"] not in FAMILIES:
            raise CardError(f"model card {source}: family must be one of {FAMILIES}, got {data['family']!r}")
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            family=data["family"],
            architecture=data["architecture"],
            weights=dict(data["weights"]),
            languages=tuple(data["languages"]),
            embed_dim=int(data["embed_dim"]),
            input=InputRecipe.from_dict(data["input"], source),
            source=source,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CardError(f"cannot read model card {path}: {exc}") from exc
        return cls.from_dict(data, str(path))

    @property
    def architecture_name(self) -> str:
        return self.architecture if isinstance(self.architecture, str) else self.architecture.get("name", "custom")

    @property
    def weights_source(self) -> str:
        """Where the weights come from, as a user would write it."""
        if "open_clip_pretrained" in self.weights:
            return f"open_clip:{self.architecture_name}/{self.weights['open_clip_pretrained']}"
        if "hub" in self.weights:
            return f"hf-hub:{self.weights['hub']}" + (f"/{self.weights['file']}" if self.family == "ms-clip" else "")
        return "local file (--checkpoint)"


def _builtin_cards() -> dict[str, ModelCard]:
    cards = {}
    for entry in resources.files("msearch.models").joinpath("cards").iterdir():
        if entry.name.endswith(".json"):
            card = ModelCard.from_dict(json.loads(entry.read_text(encoding="utf-8")), "built-in")
            cards[card.name] = card
    return cards


def available_cards() -> dict[str, ModelCard]:
    """Built-in cards, then user cards (a user card of the same name replaces the built-in one)."""
    cards = _builtin_cards()
    for folder in user_card_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                card = ModelCard.from_file(path)
                cards[card.name] = card
    return cards


def get_card(name_or_path: str | Path) -> ModelCard:
    """A card by name, or from a card file's path."""
    if isinstance(name_or_path, Path) or str(name_or_path).endswith(".json"):
        return ModelCard.from_file(name_or_path)
    cards = available_cards()
    if name_or_path not in cards:
        raise CardError(
            f"unknown model {name_or_path!r}; known: {', '.join(sorted(cards))} (or give a card file's path)"
        )
    return cards[name_or_path]


@dataclass(frozen=True)
class EncoderIdentity:
    """What an index records about the encoder that filled it: vectors from another identity do not mix."""

    card: str
    weights_sha256: str

    def __str__(self) -> str:
        return f"{self.card}@sha256:{self.weights_sha256[:12]}"
