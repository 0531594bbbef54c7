"""Rebuilding a space's search index: retrain and retune it from its stored vectors, with the recall target
measured on encoded text queries when its encoder is at hand. Run at the end of an indexing run whose space
crossed a size threshold, and by `msearch index --rebuild-ann`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from msearch.indexer.encoding import load_encoder
from msearch.models import ModelNotAvailableError
from msearch.store import ann
from msearch.store.ann import AnnInfo
from msearch.store.index_store import IndexStore, SpaceIndex, SpaceMismatchError

if TYPE_CHECKING:
    from msearch.models import Encoder


def rebuild_ann(store: IndexStore, view: SpaceIndex, encoder: Encoder | None = None, **settings) -> AnnInfo:
    """Retrain and retune a space's index. With its encoder at hand, the recall target is measured on encoded
    text queries (what users search with) rather than on perturbed image vectors."""
    from msearch.models.prompts import query_like_texts

    queries = None
    if encoder is not None:
        queries = encoder.encode_texts(query_like_texts(encoder.card.languages, ann.TUNING_QUERIES))
    return store.rebuild_ann(view, sample_queries=queries, **settings)


def rebuild_spaces(
    store: IndexStore, spaces: Sequence[str] | None, checkpoints: dict[str, str | Path] | None, settings: dict
) -> list[str]:
    """Rebuild each space's index (default: all), the catalogue locked by the caller: one line per space
    saying what it is searched with now. A model is loaded only to tune an index that is not exact search,
    and only the weights the space was built with."""
    notes = []
    for space in spaces or list(store.manifests()):
        manifest = store.manifest(space)
        view = store.open_space(space, fill=False)  # rebuilt below: a space without its FAISS file is not built twice
        encoder, why_not = None, ""
        # Below the exact threshold the index is exact search: there is nothing to tune, so no model is loaded.
        tuned = ann.choose_kind(
            store.vector_count(space),
            settings.get("exact_threshold", view.ann.exact_threshold),
            settings.get("compressed_threshold", view.ann.compressed_threshold),
        )
        try:
            if tuned != "flat":
                encoder = load_encoder(manifest.card, (checkpoints or {}).get(space))
        except ModelNotAvailableError as exc:
            why_not = f" (tuned on perturbed image vectors, not text queries: {exc})"
        if encoder is not None and encoder.identity.weights_sha256 != manifest.weights_sha256:
            raise SpaceMismatchError(
                f"space {space!r} was built with {manifest.identity}, but the weights found "
                f"now are {encoder.identity}: pass the weights it was built with"
            )
        info = rebuild_ann(store, view, encoder, **settings)
        store.save_space(view)
        notes.append(f"{space}: {view.ntotal} vectors, searched with {info.describe()}{why_not}")
    return notes
