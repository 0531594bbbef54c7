"""Files that are rasters but not imagery msearch can place: 1-band class maps are "not imagery", and a file
without a geotransform is a recorded problem, with no rasterio warning on the terminal."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import rasterio

from msearch.indexer.pipeline import index_archive
from msearch.indexer.readers import ArchivePixels
from tests.indexer.helpers import EUROSAT, problems_by_key


def test_a_class_map_given_as_an_example_is_a_clear_error(shared_data):
    lulc = shared_data / "terramesh-examples" / "LULC" / "282D_485L_3_3.tif"
    with pytest.raises(ValueError, match=r"^not imagery: 1 band"):
        ArchivePixels().of_file(lulc)


def test_no_geotransform_is_a_problem_not_a_warning(shared_data, tmp_path, tiny_msclip):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(sorted((shared_data / "eurosat-ms" / "Forest").glob("*.tif"))[0], src / "good.tif")
    profile = dict(driver="GTiff", width=64, height=64, count=13, dtype="uint16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing it warns too
        with rasterio.open(src / "nowhere.tif", "w", **profile) as raster:
            raster.write(np.full((13, 64, 64), 500, np.uint16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = index_archive(
            [src], index=tmp_path / "index", encoders={"tiny-ms-clip": tiny_msclip}, settings=EUROSAT, workers=0
        )
    assert [w for w in caught if "geotransform" in str(w.message)] == []
    assert summary.indexed == 1
    kind, reason = problems_by_key(tmp_path / "index")["nowhere.tif"]
    assert kind == "error" and "no coordinate reference system" in reason
