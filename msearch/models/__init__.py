"""Encoders: model cards as data, weight loading, input recipes and tokenizers.

The encoder classes import torch and open_clip (seconds): they are loaded on first use, so that reading
cards, or answering a query from cached embeddings or with a text tower exported to numpy
(msearch.models.numpy_text), does not pay for them."""

from msearch.models.card import CardError, EncoderIdentity, InputRecipe, ModelCard, available_cards, get_card
from msearch.models.hub import ModelNotAvailableError

DEFAULT_MODEL = "llama3-ms-clip-base"
_ENCODER_NAMES = ("Encoder", "TextEncoder", "load_encoder", "load_text_encoder")

__all__ = [
    "DEFAULT_MODEL",
    "CardError",
    "EncoderIdentity",
    "InputRecipe",
    "ModelCard",
    "ModelNotAvailableError",
    "available_cards",
    "get_card",
    *_ENCODER_NAMES,
]


def __getattr__(name: str):
    if name in _ENCODER_NAMES:
        from msearch.models import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
