"""Encoders: model cards as data, weight loading, input recipes and tokenizers."""

from msearch.models.card import CardError, InputRecipe, ModelCard, available_cards, get_card
from msearch.models.encoder import Encoder, EncoderIdentity, load_encoder
from msearch.models.hub import ModelNotAvailableError

DEFAULT_MODEL = "llama3-ms-clip-base"

__all__ = [
    "DEFAULT_MODEL",
    "CardError",
    "Encoder",
    "EncoderIdentity",
    "InputRecipe",
    "ModelCard",
    "ModelNotAvailableError",
    "available_cards",
    "get_card",
    "load_encoder",
]
