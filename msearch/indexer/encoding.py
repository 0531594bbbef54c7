"""Encoding: the encoders a run needs (loaded only when something needs embedding, so that torch loads only
then), the check that a space is not filled by other weights, and a batch of read tiles turned into vectors:
per space, the input recipe and one forward pass on the encoder's device (CPU or CUDA). The steps are apart
(stage, launch, finish) so that the local run stages the next batch while the device computes the current
one; a Ray encoder actor takes them in one call (`embed_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from msearch.indexer.tiles import TileSource
from msearch.models import get_card
from msearch.models.hub import weights_digest
from msearch.store.index_store import IndexStore

if TYPE_CHECKING:  # torch and the encoders load only when something needs embedding
    import torch

    from msearch.models import Encoder


def check_weights(
    store: IndexStore, spaces: Sequence[str], encoders: dict[str, "Encoder"], checkpoint: str | Path | None
) -> None:
    """Refuse a space filled by other weights before anything is written, also when there is nothing to
    embed (no model is loaded then, so ensure_space never sees the weights). The identity is taken from the
    weights file without loading it: a hub blob is named by its sha256, a local file is hashed once."""
    from msearch.models.loading import weights_file, weights_status

    existing = store.manifests()
    for space in spaces:
        if space not in existing:
            continue  # a new space: ensure_space creates it
        if space in encoders:
            identity = encoders[space].identity
            store.check_space(space, identity.card, identity.weights_sha256, encoders[space].dim)
            continue
        card = get_card(space)
        if not checkpoint and weights_status(card) != "cached":
            continue  # not on this machine: known only after a download, which a model load checks (ensure_space)
        store.check_space(space, card.name, weights_digest(weights_file(card, checkpoint)), card.embed_dim)


def load_encoder(
    space: str, checkpoint: str | Path | None = None, device="cpu", precision: str | None = None
) -> "Encoder":
    """msearch.models.load_encoder, imported when first called: torch loads only when a model is needed."""
    from msearch.models import load_encoder as load

    return load(space, checkpoint, device, precision)


@dataclass
class StagedBatch:
    """A batch of read results sorted by what becomes of them, each space's part on its way to the device."""

    size: int
    problems: list[tuple[TileSource, str, str]]  # (source, "skipped" or "error", reason)
    embed: list[dict]  # read results to embed
    touched: list[dict]  # read results whose files were only touched: their vectors are kept
    needing: dict[str, list[dict]]  # space -> the results of `embed` that need a vector in it
    staged: dict[str, object]  # space -> its encoder's StagedBatch of those results
    unfed: dict[str, int]  # space -> tiles of `embed` and `touched` that lack its bands


def stage_batch(batch: list[dict] | None, encoders: dict[str, Encoder]) -> StagedBatch | None:
    """Sort a batch of read results, and start moving what each space embeds to its encoder's device."""
    if batch is None:
        return None
    problems = [
        (r["item"].source, "skipped", r["skipped"]) if "skipped" in r else (r["item"].source, "error", r["failed"])
        for r in batch
        if "row" not in r
    ]
    ok = [r for r in batch if "row" in r]
    # A tile whose files were only touched (same content, all spaces present) keeps its vectors.
    touched = [r for r in ok if r["item"].complete_digest == r["row"]["digest"]]
    embed = [r for r in ok if r not in touched]
    needing = {space: [r for r in embed if space in r["inputs"]] for space in encoders}
    needing = {space: results for space, results in needing.items() if results}
    staged = {
        space: encoders[space].stage(
            [r["inputs"][space] for r in results], [r["offset"] for r in results], [r["full_scale"] for r in results]
        )
        for space, results in needing.items()
    }
    unfed: dict[str, int] = {}
    for r in ok:
        for space in r["unfed"]:
            unfed[space] = unfed.get(space, 0) + 1
    return StagedBatch(len(batch), problems, embed, touched, needing, staged, unfed)


@dataclass
class EmbeddedBatch:
    """What one batch of read tiles (PreparedTiles items) gives the catalogue."""

    done: list[tuple[dict, dict[str, np.ndarray]]]  # (tile row, vector by space): embedded, then kept
    problems: list[tuple[TileSource, str, str]]  # (source, "skipped" or "error", reason)
    embedded: int  # tiles of `done` with new vectors; the others only had their files touched
    unfed: dict[str, int] = field(default_factory=dict)  # space -> tiles of `done` that lack its bands


def embed_batch(batch: list[dict], encoders: dict[str, "Encoder"]) -> EmbeddedBatch:
    """Problems recorded, touched tiles kept, the rest encoded: the recipe and one forward pass per space,
    on each encoder's device."""
    staged = stage_batch(batch, encoders)
    return finish(staged, launch(staged, encoders), encoders)


def launch(staged: StagedBatch, encoders: dict[str, "Encoder"]) -> dict[str, "torch.Tensor"]:
    """Queue each space's forward pass of a staged batch (on CUDA, without waiting for it)."""
    return {space: encoders[space].launch(batch) for space, batch in staged.staged.items()}


def finish(staged: StagedBatch, launched: dict[str, "torch.Tensor"], encoders: dict[str, "Encoder"]) -> EmbeddedBatch:
    """Wait for the launched forward passes: the batch's rows with their vectors, and its problems."""
    vectors = {id(r): {} for r in staged.embed}
    for space, features in launched.items():
        for r, vector in zip(staged.needing[space], encoders[space].collect(features)):
            vectors[id(r)][space] = vector
    done = [(r["row"], vectors[id(r)]) for r in staged.embed] + [(r["row"], {}) for r in staged.touched]
    return EmbeddedBatch(done, staged.problems, len(staged.embed), staged.unfed)
