"""Zero-shot classification of files: nothing to classify is an error before any model loads; progress per batch."""

import numpy as np
import pytest

from msearch.indexer import classify
from msearch.indexer.classify import classify_files


def test_progress_is_reported_per_batch_and_probabilities_cover_every_tile(shared_data, monkeypatch):
    monkeypatch.setattr(classify, "BATCH_SIZE", 2)
    calls = []
    keys, probabilities, failures = classify_files(
        [shared_data / "terramesh-examples" / "S2L2A"],
        ["ocean", "farmland"],
        "tiny-ms-clip",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert len(keys) == 5 and failures == []
    assert probabilities.shape == (5, 2) and np.allclose(probabilities.sum(axis=1), 1.0)


def test_a_folder_without_rasters_is_an_error_before_the_model_loads(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("no rasters")

    def no_model(*args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("msearch.models.load_encoder", no_model)
    with pytest.raises(ValueError, match=f"found no rasters to classify under {tmp_path}"):
        classify_files([tmp_path], ["a", "b"], "tiny-ms-clip")


def test_an_rgb_file_the_model_cannot_take_is_a_failure_of_that_file(shared_data):
    """Multispectral model, an 8-bit RGB file beside a 12-band one: the RGB file fails with its reason, the
    other is classified."""
    folder = shared_data / "terramesh-examples"
    keys, probabilities, failures = classify_files(
        [folder / "S2L2A" / "282D_485L_3_3.tif", folder / "S2RGB" / "282D_485L_3_3.tif"],
        ["ocean", "farmland"],
        "tiny-ms-clip",
    )
    # tiles are named by their resolved files (the sample data may sit behind a symbolic link)
    assert keys == [str((folder / "S2L2A" / "282D_485L_3_3.tif").resolve())] and probabilities.shape == (1, 2)
    assert len(failures) == 1 and failures[0][0] == str((folder / "S2RGB" / "282D_485L_3_3.tif").resolve())
    assert failures[0][1].startswith("missing bands B05, B06, B07, B08, B8A, B11, B12 (the tile has B04, B03, B02)")
