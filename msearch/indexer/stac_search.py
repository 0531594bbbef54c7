"""Tiles found by searching a STAC API (`msearch index --stac-search URL`): the items of one collection in a
bounding box and a time range, paged through with pystac-client, read in place from their remote assets.

A searched item is keyed by its path under the API, `collections/<collection>/items/<id>`, with the API's URL
as its root, so root/key is the item's own URL (where a quicklook re-reads it). Searches are not folders:
items a later search does not return are not gone, and --prune leaves them alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from msearch.indexer.readers.remote import redact
from msearch.indexer.readers.stac import StacReader
from msearch.indexer.tiles import ReadSettings, TileSource

PAGE_SIZE = 100  # items per page asked of the API


@dataclass(frozen=True)
class StacSearch:
    url: str  # the API's landing page, e.g. https://earth-search.aws.element84.com/v1
    collection: str
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat
    datetime: str | None = None  # "2024-06-01/2024-08-31", RFC 3339 or an open range ("2024-06-01/..")
    max_cloud: float | None = None  # percent; items of unknown cloud cover are left out
    limit: int | None = None  # at most this many items

    def describe(self) -> str:
        parts = [f"collection {self.collection}"]
        if self.bbox:
            parts.append("bbox " + ",".join(f"{v:g}" for v in self.bbox))
        if self.datetime:
            parts.append(f"datetime {self.datetime}")
        if self.max_cloud is not None:
            parts.append(f"cloud <= {self.max_cloud:g}%")
        return f"{redact(self.url)} ({', '.join(parts)})"


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """'minlon,minlat,maxlon,maxlat' -> floats, checked."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[0] > values[2] or values[1] > values[3]:
        raise ValueError(f"--bbox {text!r} must be minlon,minlat,maxlon,maxlat in degrees (min before max)")
    return values


def search_items(search: StacSearch) -> list:
    """The items the API returns, every page followed, at most `limit`."""
    try:
        from pystac_client import Client
        from pystac_client.exceptions import APIError
    except ImportError:
        raise ValueError("--stac-search needs pystac-client: pip install 'msearch[remote]'") from None

    query = {"eo:cloud_cover": {"lte": search.max_cloud}} if search.max_cloud is not None else None
    try:
        client = Client.open(search.url)
        results = client.search(
            collections=[search.collection],
            bbox=list(search.bbox) if search.bbox else None,
            datetime=search.datetime,
            query=query,
            max_items=search.limit,
            limit=min(PAGE_SIZE, search.limit or PAGE_SIZE),
        )
        items = list(results.items())
    except (APIError, OSError) as exc:
        raise ValueError(f"the STAC search at {search.describe()} failed: {exc}") from None
    if search.max_cloud is not None:  # also where an API ignores the query extension
        items = [i for i in items if (c := i.properties.get("eo:cloud_cover")) is not None and c <= search.max_cloud]
    return items


def search_sources(search: StacSearch, settings: ReadSettings) -> list[TileSource]:
    root = redact(search.url).rstrip("/")  # catalogued: without user, password or query
    reader = StacReader()
    return [
        source
        for item in search_items(search)
        for source in reader.item_sources(root, f"collections/{item.collection_id}/items/{item.id}", item, settings)
    ]
