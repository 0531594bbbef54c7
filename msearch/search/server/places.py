"""The API's place routes (msearch.store.places): a place and its acquisitions.

    GET /api/places/{id}     the place (grid, footprint, centre) and every acquisition of it in date order

Routes of places go here, on the router `places_router` makes; create_app includes it. Errors are the server's
(msearch.search.server.contract: ApiError, documented per route with `errors`).
"""

from __future__ import annotations

import json
from typing import Optional

from fastapi import APIRouter

from msearch.search.searcher import Searcher
from msearch.search.server.contract import ApiError, errors
from msearch.search.server.schemas import PlaceFields

PLACE_NOT_FOUND = errors(404, why={404: "No place with this id (or the path names no place id)."})


class PlaceNotFound(ApiError):
    def __init__(self, message: str):
        super().__init__(404, message)


def places_router(searcher: Searcher) -> APIRouter:
    """The place routes over a searcher's store."""
    router = APIRouter()

    @router.get("/api/places/{place_id}", response_model=PlaceFields, responses=PLACE_NOT_FOUND)
    def place(place_id: str):
        """A place: its grid (CRS, pixel size, size, upper-left corner) and footprint, its centre (`lon`, `lat`),
        and `acquisitions`: every tile of it in date order, with the fields of /api/tiles/{id}."""
        return place_document(searcher, place_id)

    return router


def place_document(searcher: Searcher, place_id: str) -> dict:
    """The JSON of GET /api/places/{id}; PlaceNotFound for an id that names no place."""
    # An id is only ever a catalogue key: anything but a plain number is simply not a place.
    if not (place_id.isascii() and place_id.isdigit() and len(place_id) <= 18):
        raise PlaceNotFound(f"no place {place_id[:40]!r}: places are named by their numeric id")
    row = searcher.store.place(int(place_id))
    acquisitions = searcher.store.place_acquisitions(int(place_id)) if row is not None else []
    if not acquisitions:  # a place without tiles is deleted with its last one: never shown
        raise PlaceNotFound(f"no place with id {place_id} in this index")
    return {
        "place_id": row["id"],
        "crs": row["crs"],
        "pixel_size": row["pixel_size"],
        "pixel_height": row["pixel_height"],
        "width": row["width"],
        "height": row["height"],
        "origin": [row["origin_x"], row["origin_y"]] if row["origin_x"] is not None else None,
        "lon": row["centre_lon"],
        "lat": row["centre_lat"],
        "bbox": [row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]],
        "footprint": _geometry(row["footprint"]),
        "acquisitions": [_tile_fields(tile) for tile in acquisitions],
    }


def _tile_fields(row: dict) -> dict:
    return dict(row, footprint=_geometry(row.get("footprint")))


def _geometry(text: Optional[str]) -> Optional[dict]:
    return json.loads(text) if text else None
