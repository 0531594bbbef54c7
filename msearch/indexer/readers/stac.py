"""STAC items, item collections and catalogues whose assets are local files or remote COGs (https, s3, gs:
read in place, see msearch.indexer.readers.remote), from documents on disk or at a URL.

Each item is one scene (cut into chips when large). Assets name their band by key ("B02", "B2", "blue",
"nir08", "B02_10m"), or by `eo:bands` / STAC 1.1 `bands` entries (name or common name); previews (roles
visual, overview, thumbnail) are not bands, and a GeoTIFF wins over a JP2 copy. An `scl` asset gives each
chip its cloud fraction. The item's properties give the datetime, `eo:cloud_cover`, the MGRS tile
(`s2:mgrs_tile`, `mgrs:*` or `grid:code`), the processing baseline (`s2:processing_baseline`) and the offset
the values carry (`earthsearch:boa_offset_applied`, else `raster:bands` offset and scale).

Keys: an item file's path; an item inside an item collection is `<collection file>/<item id>`. Under a URL
root (a remote document's folder), the item's href relative to it. Tiles of remote assets carry the item's
id and `updated` (or the assets' ETags) as their `remote_identity`, their change check.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from msearch.indexer.naming import facts_from_name
from msearch.indexer.readers.remote import asset_etags, failure_reason, identity, is_remote, redact, remote_env
from msearch.indexer.readers.stack import (
    SCL_MASK_CLASSES,
    UNREADABLE,
    BandFile,
    CloudMask,
    SceneFacts,
    read_scene_with,
    read_stack,
    reference_band,
    scene_sources,
)
from msearch.indexer.tiles import ReadSettings, Tile, TileSource, is_raster_name, relative_key
from msearch.schema.bands import BANDS_BY_NAME, asset_band

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
                    sources.extend(self.item_sources(root, key, item, settings, item_path, claimed))
        for path, kind in documents.items():
            if path in claimed:
                continue
            if kind == "Feature":
                item = pystac.Item.from_file(str(path))
                sources.extend(self.item_sources(root, relative_key(root, path), item, settings, path, claimed))
            elif kind == "FeatureCollection":
                collection = pystac.ItemCollection.from_file(str(path))
                for item in collection:
                    key = f"{relative_key(root, path)}/{item.id}"
                    sources.extend(self.item_sources(root, key, item, settings, path, claimed))
                claimed.add(path)
        return sources, claimed

    def discover_url(self, url: str, settings: ReadSettings, root: str | None = None) -> list[TileSource]:
        """The tiles of a STAC item, item collection, catalogue or collection at an http(s) URL. The root is
        the document's folder URL (or `root`, a URL above it); keys are the items' hrefs relative to it (so
        `root/key` is the item's URL)."""
        import pystac

        document = pystac.StacIO.default().read_json(url)
        root = root or redact(url).rsplit("/", 1)[0]  # catalogued: without user, password or query
        kind = _document_type(document)
        if kind in ("Catalog", "Collection"):
            catalog = pystac.read_dict(document, href=url)
            items = [
                (_url_key(root, item.get_self_href() or item.id), item) for item in catalog.get_items(recursive=True)
            ]
        elif kind == "Feature":
            items = [(_url_key(root, url), pystac.Item.from_dict(document, href=url))]
        elif kind == "FeatureCollection":
            collection = pystac.ItemCollection.from_dict(document, preserve_dict=False)
            items = [(f"{_url_key(root, url)}/{item.id}", item) for item in collection]
        else:
            raise ValueError("it is not a STAC item, item collection, catalogue or collection")
        return [source for key, item in items for source in self.item_sources(root, key, item, settings)]

    def item_sources(
        self,
        root: Path | str,
        key: str,
        item,
        settings: ReadSettings,
        document: Path | None = None,
        claimed: set[Path] | None = None,
    ) -> list[TileSource]:
        """The tiles of one item. `document` is the local file it was read from (its relative hrefs are
        resolved against its folder); items of a STAC API or a remote catalogue have none."""
        folder = document.parent if document else None
        bands, scl, local_files = item_assets(item, folder)
        if not bands:
            return []
        remote = [b.path for b in bands if is_remote(b.path)] + ([scl] if scl and is_remote(scl) else [])
        local_bands = {Path(b.path) for b in bands if not is_remote(b.path)}
        local_scl = {Path(scl)} if scl and not is_remote(scl) else set()
        tile_files = tuple(sorted({*([document] if document else []), *local_bands, *local_scl}))
        if claimed is not None:
            claimed.update({*([document] if document else []), *local_files})
        offsets = _carried_offsets(item, {b.path for b in bands}, folder)
        options = (
            ("bands", bands),
            ("scl", scl),
            ("facts", item_facts(item, offsets)),
            ("offsets", tuple(sorted(offsets))),
        )
        reference = reference_band(bands)
        if not remote:
            return scene_sources(root, key, tile_files, self.name, reference.path, settings, options)
        grid_size = _asset_grid_size(item, reference.path, folder) if is_remote(reference.path) else None
        with remote_env():  # without `proj:shape`, the reference band's header is read
            sources = scene_sources(root, key, tile_files, self.name, reference.path, settings, options, grid_size)
        # Remote assets: the item's id and `updated` (else the assets' ETags, else the item's own content)
        # stand for their content, so that an unchanged item is recognised without a request for pixels.
        updated = item.properties.get("updated")
        version = updated or asset_etags(remote) or json.dumps(item.to_dict(include_self_link=False), sort_keys=True)
        marker = identity(item.id, version)
        return [replace(source, remote_identity=marker) for source in sources]

    def read(self, source: TileSource, settings: ReadSettings) -> Tile:
        if source.remote_identity is None:
            return read_stack(source, settings, *self.parts(source, settings))
        from rasterio.errors import RasterioError

        with remote_env() as messages:
            try:
                return read_stack(source, settings, *self.parts(source, settings))
            except (ValueError, RasterioError) as exc:
                raise _remote_failure(exc, source, messages) from None

    def read_scene(self, sources: list[TileSource], settings: ReadSettings) -> Iterator[tuple[TileSource, object]]:
        if sources[0].remote_identity is None:
            yield from read_scene_with(sources, settings, self.parts)
            return
        with remote_env() as messages:
            for source, outcome in read_scene_with(sources, settings, self.parts):
                yield source, _remote_failure(outcome, source, messages) if isinstance(outcome, Exception) else outcome

    def parts(self, source: TileSource, settings: ReadSettings) -> tuple:
        """(bands, facts, cloud mask) of an item, the same for each of its chips."""
        if len(source.option("offsets")) > 1 and settings.offset is None:
            raise ValueError(
                f"the item's bands state different offsets {source.option('offsets')}; one offset per tile is supported (force one with --offset)"
            )
        scl = source.option("scl")
        cloud_mask = CloudMask(scl, **SCL_MASK_CLASSES) if scl else None
        return source.option("bands"), source.option("facts"), cloud_mask


def _remote_failure(exc: Exception, source: TileSource, messages: list[str]) -> Exception:
    """A read of remote assets that GDAL could not do, as a ValueError naming the asset and the HTTP status;
    any other exception (a tile to skip, bad values) as it is."""
    from rasterio.errors import RasterioError

    if not isinstance(exc, RasterioError) and not (isinstance(exc, ValueError) and str(exc).startswith(UNREADABLE)):
        return exc
    bands, scl = source.option("bands"), source.option("scl")
    urls = [b.path for b in bands if is_remote(b.path)] + ([scl] if scl and is_remote(scl) else [])
    return ValueError(failure_reason(exc, urls, messages))


def _stac_type(path: Path) -> str | None:
    """The STAC object type of a JSON file, or None when it is not STAC (any other JSON sidecar)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return _document_type(document)


def _document_type(document) -> str | None:
    if not isinstance(document, dict):
        return None
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document.get("features") or []
        return kind if features and all(isinstance(f, dict) and "stac_version" in f for f in features) else None
    return kind if "stac_version" in document and kind in ("Feature", "Catalog", "Collection") else None


def _url_key(root: str, href: str) -> str:
    """An item's key under a remote root: its href relative to the root (the whole href when elsewhere)."""
    href = redact(href)
    return href[len(root) + 1 :] if href.startswith(root + "/") else href


def item_assets(item, folder: Path | None) -> tuple[tuple[BandFile, ...], str | None, set[Path]]:
    """Bands (a single-band asset wins over a band of a multiband one, a GeoTIFF over a JP2 copy), the SCL
    file, and every local file the item refers to. Relative hrefs are resolved against the item's own folder
    (`folder`, for an item read from a local file); remote hrefs (https, s3, gs) are kept as URLs."""
    single: dict[str, BandFile] = {}
    multi: dict[str, BandFile] = {}
    scl = None
    local_files: set[Path] = set()
    for key, asset in sorted(item.assets.items(), key=lambda entry: _is_jp2(entry[1].href)):
        location = _resolve_href(asset.href, folder)
        if location is None:
            continue
        if isinstance(location, Path):
            if not location.is_file():
                continue
            local_files.add(location)
        if _NOT_BAND_ROLES & set(asset.roles or ()) or not is_raster_name(Path(urlparse(str(location)).path)):
            continue
        if _asset_key_stem(key) == "scl":
            scl = scl or str(location)
            continue
        names = _asset_band_names(key, asset.extra_fields)
        target = single if len(names) == 1 else multi
        for index, band in enumerate(names, start=1):
            if band is not None:
                target.setdefault(band, BandFile(band, str(location), index))
    bands = {**multi, **single}
    order = list(BANDS_BY_NAME)
    return tuple(sorted(bands.values(), key=lambda b: order.index(b.band))), scl, local_files


def _asset_key_stem(key: str) -> str:
    """'SCL', 'scl-jp2', 'SCL_20m' -> 'scl'."""
    return key.lower().split("-", 1)[0].split("_", 1)[0]


def _is_jp2(href: str) -> bool:
    return urlparse(href).path.lower().endswith(".jp2")


def _asset_band_names(key: str, fields: dict) -> list[str | None]:
    entries = fields.get("eo:bands") or fields.get("bands") or []
    if entries:
        return [
            _band_name(entry.get("name"), entry.get("common_name") or entry.get("eo:common_name")) for entry in entries
        ]
    return [_band_name(key, None)]


def _band_name(name: str | None, common_name: str | None) -> str | None:
    return next((band for candidate in (name, common_name) if candidate and (band := asset_band(candidate))), None)


def _resolve_href(href: str, folder: Path | None) -> Path | str | None:
    """A local file (Path), a remote URL (str), or None for an href that is neither (another scheme, or a
    relative href of an item that has no local folder: pystac makes those absolute when it can)."""
    parsed = urlparse(href)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if is_remote(href):
        return href
    if parsed.scheme or (folder is None and not Path(href).is_absolute()):
        return None
    path = Path(href)
    return (path if path.is_absolute() else folder / path).resolve()


def _asset_grid_size(item, href: str, folder: Path | None) -> tuple[int, int] | None:
    """(width, height) of a band asset from `proj:shape` ([rows, cols], on the asset or the item), so that
    a remote scene is cut into chips without a request; None when the item does not say."""
    for asset in item.assets.values():
        if str(_resolve_href(asset.href, folder)) == href:
            shape = asset.extra_fields.get("proj:shape") or item.properties.get("proj:shape")
            if shape and len(shape) == 2:
                return int(shape[1]), int(shape[0])
    return None


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


def _carried_offsets(item, band_paths: set[str], folder: Path | None) -> set[float]:
    """The offsets the band assets' values carry: none when Earth Search says it removed it
    (`earthsearch:boa_offset_applied`: the values were shifted back to the pre-2022 scale), else from
    `raster:bands` (reflectance = value x scale + offset, so the values carry -offset / scale); empty when
    no band asset states one (the processing baseline decides then)."""
    if item.properties.get("earthsearch:boa_offset_applied") is True:
        return {0.0}
    carried = set()
    for asset in item.assets.values():
        if str(_resolve_href(asset.href, folder)) not in band_paths:
            continue
        for entry in asset.extra_fields.get("raster:bands") or []:
            if "offset" in entry and entry.get("scale"):
                carried.add(round(-entry["offset"] / entry["scale"], 6))
    return carried


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
