import shutil
from dataclasses import dataclass
from pathlib import Path

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


@pytest.fixture(scope="session")
def change_series(tmp_path_factory, shared_data, tiny_msclip):
    """The Major TOM series (tests/places_series.py) over eight dates with a planted change (the centre chip
    becomes the reservoir shore from 2020-06-13), the same change later at another place (chip 0,192 from
    2021-02-08),
    a cloudy acquisition (chip 192,192 on 2020-08-22, flagged by the cloud mask) and an odd one nothing flags
    (chip 192,0 is wetland on 2020-10-11 only), indexed with the tiny multispectral model; and the changed
    chip's new landscape as an example (`landscape_example`), a place of its own with one acquisition, dated
    2019-12-01, before the series."""
    from msearch.indexer.pipeline import index_archive
    from tests.places_series import (
        NEW_LANDSCAPE,
        SERIES_BRIGHTNESS,
        SERIES_DATES,
        SERIES_SETTINGS,
        ChipEdit,
        build_majortom_series,
        landscape_example,
    )

    base = tmp_path_factory.mktemp("change-series")
    series = build_majortom_series(
        shared_data,
        base / "series",
        dates=SERIES_DATES + ("2021-02-08", "2021-04-19"),
        brightness=SERIES_BRIGHTNESS + (1.08, 1.0),
        changed_from=2,
        edits=(
            ChipEdit(LATER_CHIP, (6, 7), landscape=NEW_LANDSCAPE),
            ChipEdit(CLOUDY_CHIP, (3,)),
            ChipEdit(ODD_CHIP, (4,), landscape=WETLAND),
        ),
    )
    example = landscape_example(shared_data, base / "example")
    index = base / "index"
    summary = index_archive(
        [series.folder, example],
        index=index,
        encoders={"tiny-ms-clip": tiny_msclip},
        settings=SERIES_SETTINGS,
        workers=0,
    )
    assert summary.indexed == 73
    return ChangeSeries(index, series, example)


WETLAND = (330, 250)  # col, row (10 m) of a block of the cell's dark wetland
LATER_CHIP, CLOUDY_CHIP, ODD_CHIP = (0, 192, 96, 96), (192, 192, 96, 96), (192, 0, 96, 96)


@dataclass(frozen=True)
class ChangeSeries:
    index: Path
    series: object  # tests.places_series.Series
    example: Path  # the planted change's new landscape, a place of one acquisition

    def place_of(self, searcher, chip: tuple[int, int, int, int]) -> int:
        """The place of a chip window (every date's tile of that window shares it)."""
        from sqlalchemy import select

        from msearch.schema import catalog

        window = ",".join(map(str, chip))
        with searcher.store.engine.connect() as conn:
            places = set(
                conn.execute(select(catalog.tiles.c.place_id).where(catalog.tiles.c.window == window)).scalars()
            )
        assert len(places) == 1, places
        return places.pop()
