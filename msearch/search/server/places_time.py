"""Places over time in the API: a place's timeline for a query, and places ranked by change between dates.

    GET /api/places/{id}/timeline?q=TEXT | like=TILE_ID    every acquisition of the place in date order, scored
                                                           (msearch.search.timeline; `msearch timeline`)
    GET /api/change?after=DATE&to=TEXT ...                 places ranked by change (msearch.search.change;
                                                           `msearch change`), a GeoJSON FeatureCollection

Errors are {"error": "what to change"}: 400 a parameter that does not match the schema (a date that is not
YYYY-MM-DD, a number out of range), 404 an unknown place, 422 a request the schema cannot rule out (neither or
both of q and like, no change mode or two, a split date outside the archive's dates, --before after --after).
Examples are catalogued tile ids only: nothing reads a path a client gives.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Callable, Literal, Optional

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from msearch.search import formats
from msearch.search.change import ChangeFinder
from msearch.search.language import AUTO, SUPPORTED_LANGUAGES
from msearch.search.searcher import Filters, QueryError, Searcher
from msearch.search.server.places import ErrorBody
from msearch.search.timeline import UnknownPlace, place_timeline
from msearch.store import SpaceMismatchError

MAX_TOP_K = 200  # as /api/search (msearch.search.server.app, which includes this router)
MAX_QUERY_CHARS = 1000
PlaceId = Annotated[int, PathParam(ge=1, lt=2**63, description="A place id (`place_id` of a search result).")]
ExampleTile = Annotated[Optional[int], Query(ge=1, lt=2**63, description="A catalogued tile id as the example.")]
Language = Literal[(AUTO, *SUPPORTED_LANGUAGES)]


def _errors(why: dict[int, str]) -> dict:
    """The `responses=` of a route: each status with the server's error body and what it means here."""
    return {status: {"model": ErrorBody, "description": text} for status, text in why.items()}


BAD_REQUEST = "A parameter does not match the schema (a date that is not YYYY-MM-DD, a number out of range)."
STALE = "The index changed under the server in a way it cannot follow: restart `msearch serve`."
TIMELINE_ERRORS = _errors(
    {
        400: BAD_REQUEST,
        404: "No place with this id in the index.",
        409: STALE,
        422: "Neither or both of q and like; an example tile without a vector in the space; an unknown space.",
    }
)
CHANGE_ERRORS = _errors(
    {
        400: BAD_REQUEST + " A bbox that is not four numbers in WGS84.",
        409: STALE,
        422: "No change mode or more than one (to, to_like, any); from without to; before after after; a split "
        "date outside the archive's dates; an example tile without a vector in the space.",
    }
)


def places_time_router(
    searcher: Searcher,
    refresh: Callable[[], None],
    api_error: Callable[[int, str], Exception],
    filters: Callable[..., Filters],
) -> APIRouter:
    """The routes over a searcher, with the app's own parts: `refresh()` brings the searcher up to the index
    runs committed since, `api_error(status, message)` is the exception the app answers as {"error": message},
    `filters(bbox, date_from, date_to, max_cloud, tile_id)` reads the filter parameters as /api/search does."""
    router = APIRouter()
    finder = ChangeFinder(searcher)

    def run(work):
        try:
            refresh()
            return work()
        except UnknownPlace as exc:
            raise api_error(404, str(exc)) from exc
        except QueryError as exc:
            raise api_error(422, str(exc).replace("--", "")) from exc
        except SpaceMismatchError as exc:
            raise api_error(409, str(exc)) from exc

    @router.get("/api/places/{place_id}/timeline", responses=TIMELINE_ERRORS)
    def timeline(
        place_id: PlaceId,
        q: Optional[str] = Query(None, min_length=1, max_length=MAX_QUERY_CHARS, description="Query text."),
        like: ExampleTile = None,
        lang: Language = "auto",
        space: Optional[str] = Query(None, max_length=100),
    ):
        """Every acquisition of the place in date order with its score for the text (or the example tile):
        the score a query gives that tile. `acquisitions[].score` is null for a tile without a vector in the
        space."""
        found = run(
            lambda: place_timeline(
                searcher, place_id, q, like=str(like) if like is not None else None, lang=lang, space=space
            )
        )
        return JSONResponse(found.to_dict())

    @router.get("/api/change", responses=CHANGE_ERRORS)
    def change(
        after: date = Query(..., description="Split date: acquisitions on or after it are the later period."),
        before: Optional[date] = Query(
            None, description="Acquisitions before it are the earlier period (default: after)."
        ),
        to: Optional[str] = Query(None, min_length=1, max_length=MAX_QUERY_CHARS, description="Changed to this text."),
        from_text: Optional[str] = Query(
            None,
            alias="from",
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            description="Changed from this text (with to).",
        ),
        to_like: ExampleTile = None,
        any: bool = Query(False, description="Any change: how far apart the periods' embeddings are."),
        top_k: int = Query(10, ge=1, le=MAX_TOP_K),
        lang: Language = "auto",
        space: Optional[str] = Query(None, max_length=100),
        bbox: Optional[str] = Query(None, max_length=200, description="minlon,minlat,maxlon,maxlat (WGS84)"),
        max_cloud: Optional[float] = Query(None, ge=0, le=100),
        tile_id: Optional[str] = Query(None, max_length=10, description="MGRS tile, e.g. 33NZA."),
    ):
        """Places ranked by how their acquisitions after the split differ from those before it, as `msearch
        change` ranks them (README, "Change between dates"). A FeatureCollection, one Feature per place (its
        footprint), best first; `left_out` counts the places without an acquisition in one of the periods."""
        kept = filters(bbox, None, None, max_cloud, tile_id)
        found = run(
            lambda: finder.find(
                after,
                before,
                to=to,
                from_text=from_text,
                to_like=str(to_like) if to_like is not None else None,
                any_change=any,
                top_k=top_k,
                lang=lang,
                space=space,
                filters=kept,
            )
        )
        collection = formats.geojson_collection(found.results, found.info())
        for feature in collection["features"]:
            feature["id"] = feature["properties"]["place_id"]
        return JSONResponse(collection)

    return router
