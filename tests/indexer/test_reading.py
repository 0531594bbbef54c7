"""Reading (msearch.indexer.reading): a file that cannot be read or used is recorded as a problem with its
reason, never the end of the run; the good ones are indexed."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.indexer.helpers import (
    MODELS,
    assert_view_matches_catalogue,
    copy_eurosat,
    make_bad_archive,
    problems_by_key,
    run,
    tiles_by_key,
    vectors_by_key,
)


def test_bad_files_are_recorded_and_the_good_ones_indexed(shared_data, tmp_path, encoders):
    import re

    src, index = tmp_path / "src", tmp_path / "index"
    expected = make_bad_archive(shared_data, src)
    summary = run(src, index, encoders, batch_size=3)  # good and bad files share batches

    assert summary.discovered == 7
    assert summary.indexed == 2 and summary.ok
    assert summary.ignored == 1  # notes.txt: not a raster, counted as ignored rather than a problem
    # Problems name the file as found: the root joined with the key.
    assert sorted(p for p, _ in summary.failed) == sorted(
        str(src / k) for k, (kind, _) in expected.items() if kind == "error"
    )
    assert [p for p, _ in summary.skipped] == [str(src / "bad/all_zeros.tif")]
    problems = problems_by_key(index)
    assert problems.keys() == expected.keys()
    for key, (kind, pattern) in expected.items():
        assert problems[key][0] == kind, (key, problems[key])
        assert re.search(pattern, problems[key][1]), (key, problems[key])
    assert sorted(tiles_by_key(index)) == ["Forest/Forest_1.tif", "Forest/Forest_10.tif"]
    for space in MODELS:
        assert len(vectors_by_key(index, space)) == 2
        assert_view_matches_catalogue(index, space)

    # Fixing a file clears its problem and indexes it; the rest stay recorded.
    shutil.copy2(src / "Forest" / "Forest_1.tif", src / "bad" / "text.tif")
    again = run(src, index, encoders)
    assert again.indexed == 1 and again.unchanged == 2
    assert "bad/text.tif" not in problems_by_key(index) and len(problems_by_key(index)) == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading")
def test_unreadable_file_is_recorded(shared_data, tmp_path, encoders):
    src, index = tmp_path / "src", tmp_path / "index"
    good = copy_eurosat(shared_data, src, classes=("Forest",), per_class=2)
    good[1].chmod(0)
    try:
        summary = run(src, index, encoders)
    finally:
        good[1].chmod(0o644)
    assert summary.indexed == 1 and [p for p, _ in summary.failed] == [str(src / "Forest/Forest_10.tif")]
    kind, reason = problems_by_key(index)["Forest/Forest_10.tif"]
    assert kind == "error" and "ermission denied" in reason


def test_only_bad_files_is_a_failed_run(shared_data, tmp_path, encoders):
    src, index = tmp_path / "src", tmp_path / "index"
    make_bad_archive(shared_data, src)
    for path in (src / "Forest").glob("*.tif"):
        path.unlink()
    summary = run(src, index, encoders)
    assert summary.indexed == 0 and len(summary.failed) == 4 and not summary.ok
