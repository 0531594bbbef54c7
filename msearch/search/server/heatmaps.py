"""The heat-map routes of the API: where in a tile a query matches (msearch.search.heatmaps).

    GET /api/tiles/{id}/heatmap.png?q=...|like=...   the heat on the tile's pixel grid, RGBA (transparent where the
                                                     encoder saw nothing and on nodata): lay it over the quicklook
                                                     or over the map at the tile's footprint
    GET /api/tiles/{id}/heatmap.tif?q=...|like=...   one float32 score per patch, georeferenced (CRS, patch grid)
    GET /api/tiles/{id}/locate?q=...|like=...        outlines of the best-scoring patches, GeoJSON in WGS84

`q` is a text (scored in the space its language routes to, or `space`); `like` the id of an example tile (its
stored vector, in `space` or the multispectral space). Maps are computed on demand; the per-patch embeddings
of the most recent tiles are kept (PATCH_CACHE), so a tile's map for another query needs no forward pass.
"""

from __future__ import annotations

import json
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

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
from msearch.search.server.common import LANGUAGES, MAX_QUERY_CHARS, ApiError, TileId, error_responses, tile_row

PATCH_CACHE = 128  # tiles whose per-patch embeddings are kept (about 0.4 MB each for ViT-B/16)

ERRORS = error_responses(
    {
        400: "the query is malformed: neither or both of q and like, an empty q, an unknown space or language",
        404: "no such tile, or no such example tile",
        422: "this tile cannot be mapped: it cannot be read again, its space's encoder cannot take it, or the "
        "space's image encoder cannot be loaded (no weights offline: `msearch serve --checkpoint SPACE=PATH`)",
    }
)


def heatmap_router(searcher: Searcher) -> APIRouter:
    router = APIRouter()
    cache = PatchCache(searcher, PATCH_CACHE)

    def heat(
        tile_id: str,
        q: Optional[str] = Query(None, max_length=MAX_QUERY_CHARS, description="Query text (or give like)."),
        like: Optional[TileId] = Query(None, description="The id of an example tile (or give q)."),
        lang: Literal[LANGUAGES] = Query("auto", description="The language of q."),
        space: Optional[str] = Query(None, max_length=100, description="Score in this space, not the default."),
    ) -> HeatMap:
        """The tile's heat map for the request's query: the parameters every route here shares."""
        row = tile_row(searcher, tile_id)
        if like is not None and not searcher.store.tiles_by_id([like]):
            raise ApiError(404, f"no example tile with id {like} in this index")
        try:
            target = heat_target(searcher, text=q, like=None if like is None else str(like), lang=lang, space=space)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from exc
        try:
            return cache.heat(row, target)
        except QueryError as exc:
            raise ApiError(422, str(exc)) from exc

    def route(path: str, media_type: str):
        return router.get(path, response_class=Response, responses={200: {"content": {media_type: {}}}, **ERRORS})

    @route("/api/tiles/{tile_id}/heatmap.png", "image/png")
    def heatmap_png(heat_map: HeatMap = Depends(heat)):
        """Where in the tile the query matches: each pixel coloured by its patch's score (SegEarth-OV's per-patch
        method), dark blue at the tile's lowest to red at its highest, on the tile's pixel grid."""
        image = rgba_png_bytes(heat_rgba(heat_map))
        return Response(image, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @route("/api/tiles/{tile_id}/heatmap.tif", "image/tiff")
    def heatmap_tif(heat_map: HeatMap = Depends(heat)):
        """The per-patch scores as a float32 GeoTIFF in the tile's CRS (NaN: nodata), as `query --heatmaps`."""
        data = geotiff_bytes(heat_map)
        return Response(data, media_type="image/tiff", headers={"Cache-Control": "private, max-age=300"})

    @route("/api/tiles/{tile_id}/locate", "application/geo+json")
    def locate(
        heat_map: HeatMap = Depends(heat),
        threshold: Optional[float] = Query(None, ge=-2, le=2, description="Default: Otsu's, per tile."),
    ):
        """Outlines of the patches scoring at least `threshold`, in WGS84, each with its mean and highest score:
        what `msearch locate` writes."""
        try:
            collection = outline(heat_map, threshold)
        except QueryError as exc:  # a flat map has no Otsu threshold
            raise ApiError(422, str(exc)) from exc
        return Response(json.dumps(collection), media_type="application/geo+json")

    return router
