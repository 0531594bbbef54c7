"""The one interface the rest of msearch uses to turn tiles and texts into vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from msearch.models.card import EncoderIdentity, ModelCard, get_card
from msearch.models.hub import weights_digest
from msearch.models.loading import LoadedModel, load_model, load_text_model
from msearch.models.recipe import prepare
from msearch.schema.pixels import Pixels


class TextEncoder:
    """Texts -> (n, d) float32, L2-normalised: what a query needs, and all that `load_text_encoder` builds."""

    def __init__(self, card: ModelCard, loaded: LoadedModel, encode_tokens=None):
        self.card = card
        self.model = loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self.weights_path = loaded.weights_path
        self.identity = EncoderIdentity(card.name, weights_digest(loaded.weights_path))
        self._encode_tokens = encode_tokens or self.model  # a text tower maps token ids to features

    @property
    def dim(self) -> int:
        return self.card.embed_dim

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    def truncates(self, text: str) -> bool:
        """Whether the tokenizer cuts this text to its context length (77 tokens for both families)."""
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
        if inner is not None:
            return len(inner(self.tokenizer.clean_fn(text))["input_ids"]) > self.context_length
        return len(self.tokenizer.encode(text)) + 2 > self.context_length  # + start and end tokens

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        features = self._encode_tokens(self.tokenizer(list(texts)))
        return torch.nn.functional.normalize(features, dim=-1).float().numpy()


class Encoder(TextEncoder):
    """Image batches and texts -> (n, d) float32, L2-normalised; cosine similarity is the score."""

    def __init__(self, card: ModelCard, loaded: LoadedModel):
        super().__init__(card, loaded, encode_tokens=loaded.model.encode_text)

    def prepare(self, tiles: Sequence[Pixels]) -> torch.Tensor:
        """The card's input recipe (pure and batched; see msearch.models.recipe)."""
        return prepare(self.card.input, tiles)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> np.ndarray:
        """Prepared inputs (n, bands, 224, 224) -> (n, d)."""
        features = self.model.encode_image(batch, normalize=True)
        return features.float().numpy()

    def encode_pixels(self, tiles: Sequence[Pixels]) -> np.ndarray:
        return self.encode_images(self.prepare(tiles))


def load_encoder(
    model: str | Path | ModelCard = "llama3-ms-clip-base", checkpoint: str | Path | None = None
) -> Encoder:
    """An encoder by card name or card file, with weights from the hub/cache or from `checkpoint`."""
    card = model if isinstance(model, ModelCard) else get_card(model)
    return Encoder(card, load_model(card, checkpoint))


def load_text_encoder(
    model: str | Path | ModelCard = "llama3-ms-clip-base", checkpoint: str | Path | None = None
) -> TextEncoder:
    """Only the text side of an encoder (see loading.load_text_model): a fraction of the time and memory."""
    card = model if isinstance(model, ModelCard) else get_card(model)
    return TextEncoder(card, load_text_model(card, checkpoint))
