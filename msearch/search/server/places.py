"""The API's place routes (msearch.store.places): a place and its acquisitions.

    GET /api/places/{id}     the place (grid, footprint, centre) and every acquisition of it in date order

Routes of places go here, on the router `places_router` makes; create_app includes it after contract.install.
Errors are the contract's body, {"error": "..."}, documented per route with `responses=errors(...)`.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

from fastapi import APIRouter
from fastapi import Path as PathParam

from msearch.search.searcher import Searcher
from msearch.search.server.contract import ApiError, errors
from msearch.search.server.params import integer
from msearch.search.server.schemas import PlaceFields

# Place ids are catalogue row ids, as tile ids are (params.MAX_TILE_ID).
PlaceId = integer(ge=1, le=2**53 - 1, description="A place id (`place_id` of a search result).")
PLACE_NOT_FOUND = errors(404, why={404: "No place with this id (or the path names no place id)."})


def places_router(searcher: Searcher) -> APIRouter:
    """The place routes over a searcher's store."""
    router = APIRouter()

    @router.get("/api/places/{place_id}", response_model=PlaceFields, responses=PLACE_NOT_FOUND)
    def place(place_id: Annotated[PlaceId, PathParam()]):
        """A place: its grid (CRS, pixel size, size, upper-left corner) and footprint, its centre (`lon`, `lat`),
        and `acquisitions`: every tile of it in date order, with the fields of /api/tiles/{id}."""
        return place_document(searcher, place_id)

    return router


def place_document(searcher: Searcher, place_id: int) -> dict:
    """The JSON of GET /api/places/{id}; ApiError 404 for an id that names no place (the id is only ever a
    catalogue key: PlaceId lets nothing but a number through)."""
    row = searcher.store.place(place_id)
    acquisitions = searcher.store.place_acquisitions(place_id) if row is not None else []
    if not acquisitions:  # a place without tiles is deleted with its last one: never shown
        raise ApiError(404, f"no place with id {place_id} in this index")
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
