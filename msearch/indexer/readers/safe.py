"""Sentinel-2 SAFE products, Level-1C and Level-2A, unzipped or zipped (read through GDAL's /vsizip/).

A product is found by its metadata file (`MTD_MSIL1C.xml` / `MTD_MSIL2A.xml`); every granule
(`GRANULE/<granule>/IMG_DATA`) is a scene, cut into chips. Each band is taken at its native resolution
(L2A keeps B02 at 10, 20 and 60 m: the 10 m file is read). The metadata gives acquisition time,
processing baseline, cloud cover and the offsets per band (`RADIO_ADD_OFFSET` for L1C, `BOA_ADD_OFFSET`
for L2A, stated as negative numbers to add: the stored values carry minus that). L2A's scene
classification (`SCL_20m.jp2`) gives each chip its own cloud fraction; L1C chips get the product's.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
import zipfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Iterator

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
from msearch.indexer.tiles import ReadSettings, Tile, TileSource, relative_key
from msearch.schema.bands import BANDS_BY_NAME, canonical_band

_METADATA_NAMES = {"MTD_MSIL1C.xml": "L1C", "MTD_MSIL2A.xml": "L2A"}
# L1C: T33NZA_20220706T085611_B02.jp2; L2A: T33NZA_20220706T085611_B02_10m.jp2 (R10m/R20m/R60m).
_IMAGE_RE = re.compile(r"_(?P<band>B\d\dA?|B8A|SCL)(?:_(?P<resolution>\d\d)m)?\.jp2$", re.IGNORECASE)


class SafeReader:
    name = "safe"

    def discover(self, root: Path, files: list[Path], settings: ReadSettings) -> tuple[list[TileSource], set[Path]]:
        sources: list[TileSource] = []
        claimed: set[Path] = set()
        for path in files:
            if path.name in _METADATA_NAMES:
                product = path.parent
                product_files = [f for f in files if product in f.parents]
                members = [f.relative_to(product).as_posix() for f in product_files]
                product_key = relative_key(root, product)
                metadata = (None, str(path))
                sources.extend(
                    self._granule_sources(root, product_key, str(product), members, metadata, None, settings)
                )
                claimed.update(product_files)
            elif path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    names = [n for n in archive.namelist() if not n.endswith("/")]
                for member in (n for n in names if PurePosixPath(n).name in _METADATA_NAMES):
                    inside = PurePosixPath(member).parent.as_posix()  # the .SAFE folder in the zip, or "."
                    prefix = "" if inside == "." else inside + "/"
                    members = [n[len(prefix) :] for n in names if n.startswith(prefix)]
                    product_key = relative_key(root, path) + (f"/{inside}" if prefix else "")
                    product_path = f"/vsizip/{path}" + (f"/{inside}" if prefix else "")
                    metadata = (str(path), member)
                    sources.extend(
                        self._granule_sources(root, product_key, product_path, members, metadata, path, settings)
                    )
                    claimed.add(path)
        return sources, claimed

    def _granule_sources(
        self,
        root: Path,
        product_key: str,
        product_path: str,
        members: list[str],
        metadata: tuple[str | None, str],
        archive: Path | None,
        settings: ReadSettings,
    ) -> list[TileSource]:
        """One scene per granule. `members` are the product's files relative to the product folder;
        `product_path` is the folder as GDAL opens it (on disk, or /vsizip/ inside `archive`);
        `metadata` is (zip archive or None, the metadata XML's path in it or on disk)."""
        granules = sorted(
            {PurePosixPath(m).parts[1] for m in members if m.startswith("GRANULE/") and "/IMG_DATA/" in m}
        )
        sources = []
        for granule in granules:
            bands, scl = _granule_images(
                product_path, [m for m in members if m.startswith(f"GRANULE/{granule}/IMG_DATA/")]
            )
            if not bands:
                continue
            if archive:
                tile_files = (archive,)
            else:
                read_paths = [b.path for b in bands] + [metadata[1]] + ([scl] if scl else [])
                tile_files = tuple(sorted(Path(p) for p in read_paths))
            options = (("bands", bands), ("scl", scl), ("metadata", metadata), ("granule", granule))
            key = f"{product_key}/GRANULE/{granule}"
            sources.extend(
                scene_sources(root, key, tile_files, self.name, reference_band(bands).path, settings, options)
            )
        return sources

    def read(self, source: TileSource, settings: ReadSettings) -> Tile:
        return read_stack(source, settings, *self.parts(source, settings))

    def read_scene(self, sources: list[TileSource], settings: ReadSettings) -> Iterator[tuple[TileSource, object]]:
        return read_scene_with(sources, settings, self.parts)

    def parts(self, source: TileSource, settings: ReadSettings) -> tuple:
        """(bands, facts, cloud mask) of a granule, the same for each of its chips."""
        facts = product_facts(source.option("metadata"), source.option("granule"), source.option("bands"))
        scl = source.option("scl")
        cloud_mask = CloudMask(scl, **SCL_MASK_CLASSES) if scl else None
        return source.option("bands"), facts, cloud_mask


def _granule_images(product_path: str, members: list[str]) -> tuple[tuple[BandFile, ...], str | None]:
    """Each band's file at its native resolution, and the scene classification (L2A only)."""
    bands: dict[str, BandFile] = {}
    scl = None
    for member in sorted(members):
        match = _IMAGE_RE.search(member)
        if not match:
            continue
        resolution = match.group("resolution")
        path = f"{product_path}/{member}"
        if match.group("band").upper() == "SCL":
            scl = path
            continue
        band = canonical_band(match.group("band"))
        if resolution is None or int(resolution) == BANDS_BY_NAME[band].resolution_m:
            bands[band] = BandFile(band, path)
    order = list(BANDS_BY_NAME)
    return tuple(sorted(bands.values(), key=lambda b: order.index(b.band))), scl


def product_facts(metadata: tuple[str | None, str], granule: str, bands: tuple[BandFile, ...]) -> SceneFacts:
    """Facts from the product metadata XML (element names as in ESA's PSD 14 schema, namespaces ignored).
    `metadata` is (zip archive or None, path of the XML in it or on disk)."""
    archive, path = metadata
    try:
        if archive:
            with zipfile.ZipFile(archive) as opened:
                root = ElementTree.fromstring(opened.read(path))
        else:
            root = ElementTree.parse(path).getroot()
    except (OSError, KeyError, zipfile.BadZipFile, ElementTree.ParseError) as exc:
        raise ValueError(f"the product metadata {PurePosixPath(path).name} is not readable ({exc})") from None
    texts: dict[str, str] = {}
    for element in root.iter():
        texts.setdefault(_local(element.tag), (element.text or "").strip())
    level = _METADATA_NAMES[PurePosixPath(path).name]
    product_name = texts.get("PRODUCT_URI") or texts.get("PRODUCT_URI_2A") or ""
    from_product = facts_from_name(product_name)
    start = texts.get("PRODUCT_START_TIME")
    names = replace(
        from_product,
        product=product_name.removesuffix(".SAFE") or from_product.product,
        level=level,
        acquired=_parse_time(start) or from_product.acquired,
        processing_baseline=texts.get("PROCESSING_BASELINE") or from_product.processing_baseline,
        mgrs_tile=facts_from_name(granule).mgrs_tile or from_product.mgrs_tile,
    )
    cloud = texts.get("Cloud_Coverage_Assessment")
    return SceneFacts(
        names=names,
        acquired=start or None,
        cloud_cover=float(cloud) if cloud else None,
        offset=_carried_offset(root, level, bands),
    )


def _carried_offset(root, level: str, bands: tuple[BandFile, ...]) -> float:
    """What the stored values carry on top of the offset-free scale: minus the product's add-offset, which
    must be the same for every band read; 0 when the metadata lists no offsets (baselines before 04.00)."""
    physical = {}
    for element in root.iter():
        if _local(element.tag) == "Spectral_Information" and "bandId" in element.attrib:
            physical[element.attrib["bandId"]] = canonical_band(element.attrib["physicalBand"])
    offsets_tag = "RADIO_ADD_OFFSET" if level == "L1C" else "BOA_ADD_OFFSET"
    offsets = {}
    for element in root.iter():
        if _local(element.tag) == offsets_tag:
            band_id = element.attrib["band_id"]
            offsets[physical.get(band_id, list(BANDS_BY_NAME)[int(band_id)])] = -float(element.text)
    if not offsets:
        return 0.0
    carried = {offsets[b.band] for b in bands if b.band in offsets}
    if len(carried) != 1:
        raise ValueError(
            f"the product's {offsets_tag} values differ between bands ({sorted(carried)}); one offset per tile is supported"
        )
    return carried.pop()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return None
