"""Per-band folders: one GeoTIFF per band, one tile per folder.

BigEarthNet (`<patch>/<patch>_B02.tif` + `<patch>_labels_metadata.json`), Major TOM
(`<product>/B02.tif` + `cloud_mask.tif` + `thumbnail.png`) and SSL4EO-S12 (`<date>_<date>_T43RCP/B2.tif` +
`metadata.json`). Band files are named `<prefix>B02.tif` where the prefix is empty or ends in `_`; files of
one folder that share a prefix are one tile. Bands at 20 and 60 m are resampled onto the 10 m grid (see
`stack`). The folder's other files (json, png, the cloud mask) are claimed as the tile's sidecars.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from msearch.indexer.naming import facts_from_name
from msearch.indexer.readers.stack import (
    MAJORTOM_MASK_CLASSES,
    SCL_MASK_CLASSES,
    BandFile,
    CloudMask,
    SceneFacts,
    read_scene_with,
    read_stack,
    reference_band,
    scene_sources,
)
from msearch.indexer.tiles import ReadSettings, Tile, TileSource, is_raster_name, relative_key
from msearch.schema.bands import canonical_band

_BAND_FILE_RE = re.compile(r"^(?P<prefix>(?:.*_)?)(?P<band>B\d{1,2}A?)\.(?:tiff?|jp2)$", re.IGNORECASE)
_SCL_FILE_RE = re.compile(r"^(?P<prefix>(?:.*_)?)SCL(?:_20m)?\.(?:tiff?|jp2)$", re.IGNORECASE)
MAJORTOM_CLOUD_MASK = "cloud_mask.tif"
# A folder with a single band file is more likely a stray single-band raster than a band stack.
MIN_BANDS = 2


class PerBandFolderReader:
    name = "per-band"

    def discover(self, root: Path, files: list[Path], settings: ReadSettings) -> tuple[list[TileSource], set[Path]]:
        groups: dict[tuple[Path, str], dict[str, Path]] = {}
        for path in files:
            match = _BAND_FILE_RE.match(path.name)
            if not match:
                continue
            try:
                band = canonical_band(match.group("band"))
            except ValueError:
                continue
            groups.setdefault((path.parent, match.group("prefix")), {})[band] = path

        sources: list[TileSource] = []
        claimed: set[Path] = set()
        stacks = {key: bands for key, bands in groups.items() if len(bands) >= MIN_BANDS}
        stacks_per_folder = Counter(folder for folder, _ in stacks)
        for (folder, prefix), band_paths in sorted(stacks.items()):
            whole_folder = stacks_per_folder[folder] == 1
            sidecars = [
                path
                for path in files
                if path.parent == folder and path not in band_paths.values() and _is_sidecar(path, prefix, whole_folder)
            ]
            tile_files = tuple(sorted([*band_paths.values(), *sidecars]))
            key = relative_key(root, folder) if whole_folder else relative_key(root, folder / prefix.rstrip("_"))
            bands = tuple(BandFile(band, str(path)) for band, path in sorted(band_paths.items()))
            options = (("bands", bands),)
            sources.extend(
                scene_sources(root, key, tile_files, self.name, reference_band(bands).path, settings, options)
            )
            claimed.update(tile_files)
        return sources, claimed

    def read(self, source: TileSource, settings: ReadSettings) -> Tile:
        return read_stack(source, settings, *self.parts(source, settings))

    def read_scene(self, sources: list[TileSource], settings: ReadSettings) -> Iterator[tuple[TileSource, object]]:
        return read_scene_with(sources, settings, self.parts)

    def parts(self, source: TileSource, settings: ReadSettings) -> tuple:
        """(bands, facts, cloud mask) of a folder, the same for each of its chips."""
        files = source.files
        facts = scene_facts(source.path, [path for path in files if path.suffix.lower() == ".json"])
        return source.option("bands"), facts, _cloud_mask(files)


def _is_sidecar(path: Path, prefix: str, whole_folder: bool) -> bool:
    """Files that belong to the tile: any file named with its prefix; in a folder holding one tile, also
    its metadata, previews and masks (but not other rasters, which may be tiles of their own)."""
    if prefix and path.name.startswith(prefix):
        return True
    if not whole_folder:
        return False
    return not is_raster_name(path) or path.name.lower() == MAJORTOM_CLOUD_MASK or bool(_SCL_FILE_RE.match(path.name))


def _cloud_mask(files: tuple[Path, ...]) -> CloudMask | None:
    for path in files:
        if path.name.lower() == MAJORTOM_CLOUD_MASK:
            return CloudMask(str(path), **MAJORTOM_MASK_CLASSES)
        if _SCL_FILE_RE.match(path.name):
            return CloudMask(str(path), **SCL_MASK_CLASSES)
    return None


def scene_facts(name: str, metadata_files: list[Path]) -> SceneFacts:
    """Facts from the folder's name, completed by the sidecar metadata the known archives ship:
    SSL4EO-S12's metadata.json (Earth Engine image properties) and BigEarthNet's labels_metadata.json."""
    names = facts_from_name(name)
    acquired = None
    cloud_cover = None
    extra: dict[str, object] = {}
    for path in metadata_files:
        try:
            metadata = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path.name} is not readable JSON ({exc})") from None
        if not isinstance(metadata, dict):
            continue
        if "PRODUCT_ID" in metadata:  # SSL4EO-S12
            product = facts_from_name(metadata["PRODUCT_ID"])
            names = replace(
                names,
                product=product.product or names.product,
                level=product.level or names.level,
                acquired=names.acquired or product.acquired,
                processing_baseline=metadata.get("PROCESSING_BASELINE") or product.processing_baseline,
                mgrs_tile=metadata.get("MGRS_TILE") or product.mgrs_tile or names.mgrs_tile,
            )
            if metadata.get("CLOUDY_PIXEL_PERCENTAGE") is not None:
                cloud_cover = float(metadata["CLOUDY_PIXEL_PERCENTAGE"])
        if "acquisition_date" in metadata:  # BigEarthNet
            acquired = metadata["acquisition_date"].replace(" ", "T")
            source = facts_from_name(metadata.get("tile_source", ""))
            names = replace(
                names,
                processing_baseline=names.processing_baseline or source.processing_baseline,
                mgrs_tile=names.mgrs_tile or source.mgrs_tile,
            )
            if "tile_source" in metadata:
                extra["source_product"] = metadata["tile_source"]
            if "labels" in metadata:
                extra["labels"] = list(metadata["labels"])
    return SceneFacts(names=names, acquired=acquired, cloud_cover=cloud_cover, extra=tuple(extra.items()))
