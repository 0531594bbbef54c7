"""STAC items, item collections and catalogues whose assets are local files.

Each item is one scene (cut into chips when large). Assets name their band by key ("B02", "B2", "blue"),
or by `eo:bands` / STAC 1.1 `bands` entries (name or common name); previews (roles visual, overview,
thumbnail) are not bands. An `scl` asset gives each chip its cloud fraction. The item's properties give the
datetime, `eo:cloud_cover`, the MGRS tile (`s2:mgrs_tile`, `mgrs:*` or `grid:code`), the processing
baseline (`s2:processing_baseline`) and, through `raster:bands` offset and scale, the offset the values carry.

Keys: an item file's path; an item inside an item collection is `<collection file>/<item id>`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from msearch.indexer.naming import facts_from_name
from msearch.indexer.readers.stack import (
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
from msearch.schema.bands import BANDS_BY_NAME, COMMON_NAMES, canonical_band

_NOT_BAND_ROLES = {"visual", "overview", "thumbnail"}
_LEVELS = {"S2MSI1C": "L1C", "S2MSI2A": "L2A"}


class StacReader:
    name = "stac"

    def discover(self, root: Path, files: list[Path], settings: ReadSettings) -> tuple[list[TileSource], set[Path]]:
        import pystac

        documents = {path: kind for path in files if path.suffix.lower() == ".json" and (kind := _stac_type(path))}
        sources: list[TileSource] = []
        claimed: set[Path] = set()
        # Catalogues first: they claim the item files they link to, which are then not read again as items.
        for path, kind in documents.items():
            if kind in ("Catalog", "Collection"):
                catalog = pystac.read_file(str(path))
                claimed.add(path)
                for item in catalog.get_items(recursive=True):
                    item_path = Path(item.get_self_href())
                    if item_path in claimed:
                        continue
                    key = relative_key(root, item_path) if root in item_path.parents else item_path.name
                    sources.extend(self._item_sources(root, key, item, item_path, settings, claimed))
        for path, kind in documents.items():
            if path in claimed:
                continue
            if kind == "Feature":
                item = pystac.Item.from_file(str(path))
                sources.extend(self._item_sources(root, relative_key(root, path), item, path, settings, claimed))
            elif kind == "FeatureCollection":
                collection = pystac.ItemCollection.from_file(str(path))
                for item in collection:
                    key = f"{relative_key(root, path)}/{item.id}"
                    sources.extend(self._item_sources(root, key, item, path, settings, claimed))
                claimed.add(path)
        return sources, claimed

    def _item_sources(self, root, key, item, document: Path, settings, claimed: set[Path]) -> list[TileSource]:
        bands, scl, local_files = item_assets(item, document.parent)
        if not bands:
            return []
        tile_files = tuple(sorted({document, *(Path(b.path) for b in bands), *([Path(scl)] if scl else [])}))
        claimed.update({document, *local_files})
        offsets = _carried_offsets(item, {b.path for b in bands}, document.parent)
        options = (
            ("bands", bands),
            ("scl", scl),
            ("facts", item_facts(item, offsets)),
            ("offsets", tuple(sorted(offsets))),
        )
        return scene_sources(root, key, tile_files, self.name, reference_band(bands).path, settings, options)

    def read(self, source: TileSource, settings: ReadSettings) -> Tile:
        return read_stack(source, settings, *self.parts(source, settings))

    def read_scene(self, sources: list[TileSource], settings: ReadSettings) -> Iterator[tuple[TileSource, object]]:
        return read_scene_with(sources, settings, self.parts)

    def parts(self, source: TileSource, settings: ReadSettings) -> tuple:
        """(bands, facts, cloud mask) of an item, the same for each of its chips."""
        if len(source.option("offsets")) > 1 and settings.offset is None:
            raise ValueError(
                f"the item's bands state different offsets {source.option('offsets')}; one offset per tile is supported (force one with --offset)"
            )
        scl = source.option("scl")
        cloud_mask = CloudMask(scl, **SCL_MASK_CLASSES) if scl else None
        return source.option("bands"), source.option("facts"), cloud_mask


def _stac_type(path: Path) -> str | None:
    """The STAC object type of a JSON file, or None when it is not STAC (any other JSON sidecar)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document.get("features") or []
        return kind if features and all(isinstance(f, dict) and "stac_version" in f for f in features) else None
    return kind if "stac_version" in document and kind in ("Feature", "Catalog", "Collection") else None


def item_assets(item, folder: Path) -> tuple[tuple[BandFile, ...], str | None, set[Path]]:
    """Bands (a single-band asset wins over a band of a multiband one), the SCL file, and every local file
    the item refers to. Relative hrefs are resolved against the item's own folder."""
    single: dict[str, BandFile] = {}
    multi: dict[str, BandFile] = {}
    scl = None
    local_files: set[Path] = set()
    for key, asset in item.assets.items():
        path = _local_path(asset.href, folder)
        if path is None or not path.is_file():
            continue
        local_files.add(path)
        if _NOT_BAND_ROLES & set(asset.roles or ()) or not is_raster_name(path):
            continue
        if key.lower() == "scl":
            scl = str(path)
            continue
        names = _asset_band_names(key, asset.extra_fields)
        target = single if len(names) == 1 else multi
        for index, band in enumerate(names, start=1):
            if band is not None:
                target.setdefault(band, BandFile(band, str(path), index))
    bands = {**multi, **single}
    order = list(BANDS_BY_NAME)
    return tuple(sorted(bands.values(), key=lambda b: order.index(b.band))), scl, local_files


def _asset_band_names(key: str, fields: dict) -> list[str | None]:
    entries = fields.get("eo:bands") or fields.get("bands") or []
    if entries:
        return [
            _band_name(entry.get("name"), entry.get("common_name") or entry.get("eo:common_name")) for entry in entries
        ]
    return [_band_name(key, None)]


def _band_name(name: str | None, common_name: str | None) -> str | None:
    for candidate in (name, common_name):
        if not candidate:
            continue
        if candidate.lower() in COMMON_NAMES:
            return COMMON_NAMES[candidate.lower()]
        try:
            return canonical_band(candidate)
        except ValueError:
            continue
    return None


def _local_path(href: str, folder: Path) -> Path | None:
    parsed = urlparse(href)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme:  # http(s), s3, ...: not on this machine
        return None
    path = Path(href)
    return (path if path.is_absolute() else folder / path).resolve()


def item_facts(item, offsets: set[float]) -> SceneFacts:
    properties = item.properties
    product = properties.get("s2:product_uri", "").removesuffix(".SAFE")
    names = facts_from_name(product or item.id)
    level = _LEVELS.get(properties.get("s2:product_type", "")) or names.level
    if level is None and item.collection_id:
        level = facts_from_name(item.collection_id.upper().replace("-", "_")).level
    when = item.datetime or _parse(properties.get("start_datetime"))
    names = replace(
        names,
        product=product or names.product,
        level=level,
        acquired=when.replace(tzinfo=None) if when else names.acquired,
        processing_baseline=properties.get("s2:processing_baseline") or names.processing_baseline,
        mgrs_tile=_mgrs_tile(properties) or names.mgrs_tile,
    )
    cloud = properties.get("eo:cloud_cover")
    return SceneFacts(
        names=names,
        acquired=when.isoformat() if when else None,
        cloud_cover=float(cloud) if cloud is not None else None,
        offset=next(iter(offsets)) if len(offsets) == 1 else None,
    )


def _mgrs_tile(properties: dict) -> str | None:
    if properties.get("s2:mgrs_tile"):
        return properties["s2:mgrs_tile"]
    parts = [properties.get(f"mgrs:{name}") for name in ("utm_zone", "latitude_band", "grid_square")]
    if all(part is not None for part in parts):
        return f"{int(parts[0]):02d}{parts[1]}{parts[2]}"
    code = properties.get("grid:code", "")
    return code.split("-", 1)[1] if code.startswith("MGRS-") else None


def _carried_offsets(item, band_paths: set[str], folder: Path) -> set[float]:
    """The offsets the band assets' values carry, from `raster:bands` (reflectance = value x scale + offset,
    so the values carry -offset / scale); empty when no band asset states one."""
    carried = set()
    for asset in item.assets.values():
        if str(_local_path(asset.href, folder)) not in band_paths:
            continue
        for entry in asset.extra_fields.get("raster:bands") or []:
            if "offset" in entry and entry.get("scale"):
                carried.add(round(-entry["offset"] / entry["scale"], 6))
    return carried


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
