"""The heat-map routes of the API: where in a tile a query matches (msearch.search.heatmaps).

    GET /api/tiles/{id}/heatmap.png?q=...|like=...   the heat on the tile's pixel grid, RGBA (transparent where the
                                                     encoder saw nothing and on nodata): lay it over the quicklook
                                                     or over the map at the tile's footprint
    GET /api/tiles/{id}/heatmap.tif?q=...|like=...   one float32 score per patch, georeferenced (CRS, patch grid)
    GET /api/tiles/{id}/locate?q=...|like=...        outlines of the best-scoring patches, GeoJSON in WGS84

`q` is a text (scored in the space its language routes to, or `space`); `like` the id of an example tile (its
stored vector, in `space` or the multispectral space). Maps are computed on demand; the per-patch embeddings
of the most recent tiles are kept (PATCH_CACHE), so a tile's map for another query needs no forward pass.
Statuses follow msearch.search.server.contract: 400 for what the schema refuses (a blank q, an unknown
parameter), 404 for a tile or example id that names nothing, 422 for the rules below.
"""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from msearch.search.heatmaps import (
    HeatMap,
    PatchCache,
    geotiff_bytes,
    heat_rgba,
    heat_target,
    outline,
    rgba_png_bytes,
)
from msearch.search.searcher import QueryError, Searcher
from msearch.search.server import params
from msearch.search.server.contract import ApiError, errors
from msearch.search.server.schemas import Language, Outlines

PATCH_CACHE = 128  # tiles whose per-patch embeddings are kept (about 0.4 MB each for ViT-B/16)
RULES = (
    "The request matches the schema but cannot be answered: neither or both of q and like; a space not in this "
    "index, or one that does not read the language, or in which the example has no vector; a tile that cannot "
    "be read again or that the space's encoder cannot take; a space whose image encoder cannot be loaded (no "
    "weights offline: `msearch serve --checkpoint SPACE=PATH`); (locate) a flat heat map without a threshold."
)
ERRORS = errors(404, 422, why={404: "No tile with this id, or no example tile with the id in like.", 422: RULES})


class GeoJsonResponse(JSONResponse):
    media_type = "application/geo+json"


def _binary(media_type: str) -> dict:
    return {200: {"content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}


def heatmap_router(searcher: Searcher) -> APIRouter:
    router = APIRouter()
    cache = PatchCache(searcher, PATCH_CACHE)

    # Routes take the map as `= Depends(heat)`: with postponed annotations FastAPI resolves an Annotated
    # dependency by name among the module's globals, where this closure is not.
    def heat(
        tile_id: Annotated[params.TileId, PathParam()],
        q: Annotated[Optional[params.QueryText], Query(description="Query text (or give like).")] = None,
        like: Annotated[Optional[params.TileId], Query(description="An example tile's id (or give q).")] = None,
        lang: Annotated[Language, Query(description="The language of q.")] = "auto",
        space: Annotated[Optional[params.SpaceName], Query(description="Score in this space.")] = None,
    ) -> HeatMap:
        """The tile's heat map for the request's query: the parameters every route here shares."""
        for wanted, what in ((tile_id, "tile"), (like, "example tile")):
            if wanted is not None and not searcher.store.tiles_by_id([wanted]):
                raise ApiError(404, f"no {what} with id {wanted} in this index")
        try:
            target = heat_target(searcher, text=q, like=None if like is None else str(like), lang=lang, space=space)
            return cache.heat(searcher.store.tiles_by_id([tile_id])[tile_id], target)
        except QueryError as exc:
            raise ApiError(422, str(exc)) from exc

    @router.get("/api/tiles/{tile_id}/heatmap.png", response_class=Response, responses=_binary("image/png") | ERRORS)
    def heatmap_png(heat_map: HeatMap = Depends(heat)):
        """Where in the tile the query matches: each pixel coloured by its patch's score (SegEarth-OV's per-patch
        method), dark blue at the tile's lowest to red at its highest, on the tile's pixel grid."""
        image = rgba_png_bytes(heat_rgba(heat_map))
        return Response(image, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @router.get("/api/tiles/{tile_id}/heatmap.tif", response_class=Response, responses=_binary("image/tiff") | ERRORS)
    def heatmap_tif(heat_map: HeatMap = Depends(heat)):
        """The per-patch scores as a float32 GeoTIFF in the tile's CRS (NaN: nodata), as `query --heatmaps`."""
        data = geotiff_bytes(heat_map)
        return Response(data, media_type="image/tiff", headers={"Cache-Control": "private, max-age=300"})

    @router.get(
        "/api/tiles/{tile_id}/locate", response_model=Outlines, response_class=GeoJsonResponse, responses=ERRORS
    )
    def locate(
        threshold: Annotated[Optional[float], Query(ge=-2, le=2, description="Default: Otsu's, per tile.")] = None,
        heat_map: HeatMap = Depends(heat),
    ):
        """Outlines of the patches scoring at least `threshold`, in WGS84, each with its mean and highest score:
        what `msearch locate` writes."""
        try:
            collection = outline(heat_map, threshold)
        except QueryError as exc:  # a flat map has no Otsu threshold
            raise ApiError(422, str(exc)) from exc
        return collection

    return router
