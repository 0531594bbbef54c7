import shutil

import pytest


@pytest.fixture(scope="session")
def eurosat_index(tmp_path_factory, shared_data):
    """A small real index: 3 EuroSAT tiles of each of the 10 classes, both tiny spaces."""
    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.tiles import ReadSettings
    from msearch.schema.bands import BAND_LAYOUTS

    base = tmp_path_factory.mktemp("eurosat")
    archive = base / "eurosat-ms"
    for folder in sorted((shared_data / "eurosat-ms").iterdir()):
        if folder.is_dir():
            (archive / folder.name).mkdir(parents=True)
            for n in (1, 2, 3):
                shutil.copy(folder / f"{folder.name}_{n}.tif", archive / folder.name)
    index = base / "index"
    summary = index_archive(
        [archive],
        index=index,
        models=["tiny-ms-clip", "rs-m-clip"],
        settings=ReadSettings(band_order=BAND_LAYOUTS["eurosat"]),
        workers=0,
    )
    assert summary.indexed == 30
    return index


@pytest.fixture(scope="session")
def planted_index(tmp_path_factory):
    """An index of 20,060 synthetic vectors with a planted cluster (tests/search/planted.py), built once: copy it
    (shutil.copytree) before changing it."""
    from tests.search.planted import build_planted_index

    directory = tmp_path_factory.mktemp("planted") / "index"
    build_planted_index(directory)
    return directory


@pytest.fixture(scope="session")
def places_series_index(tmp_path_factory, shared_data, tiny_msclip):
    """A Major TOM cell indexed at six dates (tests/places_series.py): 9 places of 6 acquisitions each."""
    from msearch.indexer.pipeline import index_archive
    from tests.places_series import SERIES_SETTINGS, build_majortom_series

    base = tmp_path_factory.mktemp("places-series")
    series = build_majortom_series(shared_data, base / "series")
    summary = index_archive(
        [series.folder],
        index=base / "index",
        encoders={"tiny-ms-clip": tiny_msclip},
        settings=SERIES_SETTINGS,
        workers=0,
    )
    assert summary.indexed == 9 * 6
    return base / "index"
