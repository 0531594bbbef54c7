"""What `msearch models` lists: every card with its languages, bands, weights source and status."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from msearch.models.card import available_cards
from msearch.models.loading import weights_status


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    family: str
    languages: tuple[str, ...]
    bands: tuple[str, ...]
    weights_source: str
    # 'cached', 'not downloaded' or 'local only' (see msearch.models.loading.weights_status)
    status: str
    # 'built-in' or the card file's path
    card_source: str

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def model_catalog() -> list[CatalogEntry]:
    """All available cards, sorted by name; looks only at the local cache, never at the network."""
    return [
        CatalogEntry(
            name=card.name,
            description=card.description,
            family=card.family,
            languages=card.languages,
            bands=card.input.bands,
            weights_source=card.weights_source,
            status=weights_status(card),
            card_source=card.source,
        )
        for card in sorted(available_cards().values(), key=lambda card: card.name)
    ]
