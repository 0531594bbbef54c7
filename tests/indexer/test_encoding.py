"""Encoding (msearch.indexer.encoding): a space filled by other weights, or by another encoder, is refused
before anything is written, also when there is nothing to embed."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest
import torch

from msearch.models import get_card
from msearch.models.loading import weights_file
from msearch.schema import catalog
from msearch.store.index_store import IndexStore, SpaceMismatchError
from tests import tiny_models
from tests.indexer.helpers import (
    run,
    tiles_by_key,
    vector_seqs,
)


def test_other_weights_on_an_unchanged_archive_are_refused(eurosat4, tmp_path, encoders, load_calls):
    """Nothing to embed, so no model is loaded: the space's identity is checked against the weights file."""
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    seqs, tiles = vector_seqs(index), tiles_by_key(index)
    built_with = IndexStore(index).manifest("tiny-ms-clip").weights_sha256
    other = tmp_path / "other-weights.pt"  # same card and architecture, other weights
    torch.save(
        tiny_models.msclip_release_state_dict(tiny_models.build_msclip(tiny_models.TINY_MSCLIP_CFG, seed=1)), other
    )
    other_sha = hashlib.sha256(other.read_bytes()).hexdigest()
    (eurosat4 / "Forest" / "Forest_10.tif").unlink()  # with --prune: something to write, refused all the same

    with pytest.raises(
        SpaceMismatchError,
        match=rf"space 'tiny-ms-clip' of .* was built with "
        rf"tiny-ms-clip@sha256:{built_with[:12]} .*this encoder is tiny-ms-clip@sha256:{other_sha[:12]}",
    ):
        run(eurosat4, index, models=["tiny-ms-clip"], checkpoint=other, prune=True)
    assert load_calls == []
    assert vector_seqs(index) == seqs and tiles_by_key(index) == tiles
    with IndexStore(index).engine.connect() as conn:
        assert [r.status for r in conn.execute(catalog.runs.select().order_by(catalog.runs.c.id))] == [
            "finished",
            "failed",
        ]

    # The very weights the space was built with, as a local file: same sha256, nothing to do.
    same = tmp_path / "same-weights.pt"
    shutil.copyfile(weights_file(get_card("tiny-ms-clip")), same)
    summary = run(eurosat4, index, models=["tiny-ms-clip"], checkpoint=same)
    assert (summary.indexed, summary.unchanged, summary.missing) == (0, 3, 1)
    assert load_calls == []
    assert vector_seqs(index) == seqs


def test_space_of_another_encoder_is_refused(eurosat4, tmp_path, encoders):
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    store = IndexStore(index)
    manifest = store.manifest("tiny-ms-clip")
    manifest.weights_sha256 = "0" * 64  # as if another checkpoint had filled the space
    manifest.write(store.space_dir("tiny-ms-clip"))
    seqs = vector_seqs(index)
    os.utime(eurosat4 / "Forest" / "Forest_1.tif", (time.time() + 100,) * 2)  # something to do
    with pytest.raises(SpaceMismatchError, match="cannot share an index"):
        run(eurosat4, index, encoders)
    assert vector_seqs(index) == seqs
    with store.engine.connect() as conn:
        assert [r.status for r in conn.execute(catalog.runs.select().order_by(catalog.runs.c.id))] == [
            "finished",
            "failed",
        ]
