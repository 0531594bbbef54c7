"""Places over time in the API: a place's timeline for a query, and places ranked by change between dates.

    GET /api/places/{id}/timeline?q=TEXT | like=TILE_ID    every acquisition of the place in date order, scored
                                                           (msearch.search.timeline; `msearch timeline`)
    GET /api/change?after=DATE&to=TEXT ...                 places ranked by change (msearch.search.change;
                                                           `msearch change`), a GeoJSON FeatureCollection

Errors are {"error": "what to change"}: 400 a parameter that does not match the schema (a date that is not
YYYY-MM-DD, a number out of range), 404 an unknown place (or a path that names no place id), 422 a request the schema cannot rule out (neither or
both of q and like, no change mode or two, a split date outside the archive's dates, --before after --after,
a route for English, with a space or without a text, and route=fuse, which has no scores to compare).
A text beyond English is read by `route`, rgb or bridge (Searcher.text_vector); left out, the better of the two
in the stored route comparison, else rgb. The answer's `route` says which was taken.
Examples are catalogued tile ids only: nothing reads a path a client gives.
"""

from __future__ import annotations

from typing import Annotated, Callable, Optional

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from msearch.search import formats
from msearch.search.change import ChangeFinder
from msearch.search.searcher import Filters, QueryError, Searcher
from msearch.search.server import params
from msearch.search.server.contract import ApiError, errors
from msearch.search.server.schemas import ChangeAnswer, Language, PlaceTimeline, Route
from msearch.search.timeline import UnknownPlace, place_timeline
from msearch.store import SpaceMismatchError

# Place ids are catalogue row ids, as tile ids are (params.MAX_TILE_ID).
PlaceId = params.integer(ge=1, le=params.MAX_TILE_ID, description="A place id (`place_id` of a search result).")
ExampleTile = Annotated[Optional[params.TileId], Query(description="A catalogued tile id as the example.")]
# fuse is in the schema's enum, as for /api/search, and answered 422 with why (a fused ranking has no scores).
OneSpaceRoute = Annotated[
    Optional[Route],
    Query(
        description="Beyond English: how the text is read, rgb (the multilingual RGB space) or bridge (carried "
        "into the multispectral space by the bridge); fuse is refused (422): a fused ranking has no scores to "
        "compare. Default: the better of the two in the stored route comparison, else rgb."
    ),
]
ROUTE_RULES = "a route for English or with a space; route=fuse (a fused ranking has no scores to compare)"
TIMELINE_ERRORS = errors(
    404,
    409,
    422,
    why={
        404: "No place with this id in the index (or the path names no place id).",
        422: "Neither or both of q and like; an example tile without a vector in the space; an unknown space; "
        + ROUTE_RULES
        + "; a route with like.",
    },
)
CHANGE_ERRORS = errors(
    409,
    422,
    why={
        422: "No change mode or more than one (to, to_like, any); from without to; before after after; a split "
        "date outside the archive's dates; an example tile without a vector in the space; a bbox outside WGS84 "
        "or with min > max; " + ROUTE_RULES + "; a route without to.",
    },
)


def places_time_router(searcher: Searcher, refresh: Callable[[], None], filters: Callable[..., Filters]) -> APIRouter:
    """The routes over a searcher, with the app's own parts: `refresh()` brings the searcher up to the index
    runs committed since, `filters(bbox, date_from, date_to, max_cloud, tile_id)` reads the filter parameters
    as /api/search does."""
    router = APIRouter()
    finder = ChangeFinder(searcher)

    def run(work):
        try:
            refresh()
            return work()
        except UnknownPlace as exc:
            raise ApiError(404, str(exc)) from exc
        except QueryError as exc:
            raise ApiError(422, str(exc).replace("--", "")) from exc
        except SpaceMismatchError as exc:
            raise ApiError(409, str(exc)) from exc

    @router.get("/api/places/{place_id}/timeline", response_model=PlaceTimeline, responses=TIMELINE_ERRORS)
    def timeline(
        place_id: Annotated[PlaceId, PathParam()],
        q: Annotated[Optional[params.QueryText], Query()] = None,
        like: ExampleTile = None,
        lang: Annotated[Language, Query()] = "auto",
        space: Annotated[Optional[params.SpaceName], Query()] = None,
        route: OneSpaceRoute = None,
    ):
        """Every acquisition of the place in date order with its score for the text (or the example tile):
        the score a query gives that tile. `acquisitions[].score` is null for a tile without a vector in the
        space."""
        found = run(
            lambda: place_timeline(
                searcher, place_id, q, like=str(like) if like is not None else None, lang=lang, space=space, route=route
            )
        )
        return JSONResponse(found.to_dict())

    @router.get("/api/change", response_model=ChangeAnswer, responses=CHANGE_ERRORS)
    def change(
        after: Annotated[
            params.IsoDate, Query(description="Split date: acquisitions on or after it are the later period.")
        ],
        before: Annotated[
            Optional[params.IsoDate],
            Query(description="Acquisitions before it are the earlier period (default: after)."),
        ] = None,
        to: Annotated[Optional[params.QueryText], Query(description="Changed to this text.")] = None,
        from_text: Annotated[
            Optional[params.QueryText], Query(alias="from", description="Changed from this text (with to).")
        ] = None,
        to_like: ExampleTile = None,
        any: Annotated[bool, Query(description="Any change: how far apart the periods' embeddings are.")] = False,
        top_k: Annotated[params.TopK, Query()] = 10,
        lang: Annotated[Language, Query()] = "auto",
        space: Annotated[Optional[params.SpaceName], Query()] = None,
        bbox: Annotated[Optional[params.BboxText], Query()] = None,
        max_cloud: Annotated[Optional[params.CloudPercent], Query()] = None,
        tile_id: Annotated[Optional[params.MgrsTile], Query()] = None,
        route: OneSpaceRoute = None,
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
                route=route,
            )
        )
        collection = formats.geojson_collection(found.results, found.info())
        for feature in collection["features"]:
            feature["id"] = feature["properties"]["place_id"]
        return JSONResponse(collection)

    return router
