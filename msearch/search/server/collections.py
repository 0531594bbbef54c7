"""The API of collections and detectors (msearch.store.collections, msearch.search.detect), included by
create_app. Like every /api route, these need the server's token when it has one.

    GET    /api/collections                    the collections, with their counts of labels
    POST   /api/collections                    create one: {"name", "space"?, "note"?}
    DELETE /api/collections/{name}             delete one and its labels
    GET    /api/collections/{name}/labels      its labels (tiles by id, root and key; files; missing tiles)
    POST   /api/collections/{name}/labels      {"positive": [ids], "negative": [ids], "remove": [ids], "note"?}
    GET    /api/collections/{name}/detect      tiles ranked by the detector's probability (GeoJSON)
    GET    /api/collections/{name}/suggest     the unlabelled tiles it is least sure of (GeoJSON)
"""

from __future__ import annotations

from datetime import date
from typing import Callable, Optional

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from msearch.search import formats
from msearch.search.detect import DetectionAnswer, Detector
from msearch.search.searcher import QueryError, Searcher
from msearch.search.server.app import MAX_EXAMPLES, MAX_TOP_K, ApiError, TileId, _filters
from msearch.store.collections import (
    NAME_PATTERN,
    CollectionError,
    CollectionExistsError,
    UnknownCollectionError,
    add_labels,
    create_collection,
    delete_collection,
    get_collection,
    list_collections,
    remove_labels,
)

CollectionName = Path(..., pattern=NAME_PATTERN.pattern, max_length=128, description="The collection's name.")
MAX_SUGGESTIONS = 100


class ErrorBody(BaseModel):
    error: str


def _errors(*statuses: int) -> dict:
    why = {
        400: "a parameter, body or label that cannot be used as given (the message says what to change)",
        404: "no collection of that name",
        409: "a collection of that name exists already",
    }
    return {status: {"model": ErrorBody, "description": why[status]} for status in statuses}


class NewCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN.pattern, max_length=128)
    space: Optional[str] = Field(None, max_length=100, description="Default: the multispectral space.")
    note: Optional[str] = Field(None, max_length=1000)


class LabelChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positive: list[TileId] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    negative: list[TileId] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    remove: list[TileId] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    note: Optional[str] = Field(None, max_length=1000)


def collections_router(searcher: Searcher, refresh: Callable[[], None]) -> APIRouter:
    """The routes over a searcher; `refresh` brings it up to date with index runs before a detector scores."""
    router = APIRouter(prefix="/api/collections", tags=["collections"])
    store = searcher.store

    @router.get("", responses=_errors(400))
    def collections():
        """The collections, each with its space, note and counts of positive and negative labels."""
        return {"collections": list_collections(store)}

    @router.post("", status_code=201, responses=_errors(400, 409))
    def create(body: NewCollection):
        """Create an empty collection in a space (default: the multispectral one)."""
        return _run(
            lambda: create_collection(store, body.name, searcher.example_space(body.space), body.note, "api").to_dict()
        )

    @router.delete("/{name}", responses=_errors(400, 404))
    def delete(name: str = CollectionName):
        """Delete a collection and its labels."""
        return {"deleted": name, "labels": _run(lambda: delete_collection(store, name))}

    @router.get("/{name}/labels", responses=_errors(400, 404))
    def labels(name: str = CollectionName):
        """The collection, its labels and the labelled tiles no longer in the index (`missing_tiles`)."""
        return _run(lambda: get_collection(store, name).to_dict())

    @router.post("/{name}/labels", responses=_errors(400, 404))
    def label(body: LabelChange, name: str = CollectionName):
        """Label tiles positive or negative (a tile labelled before takes its new label) and remove labels; then
        the collection as GET .../labels gives it."""

        def change() -> dict:
            counts = add_labels(store, name, body.positive, body.negative, note=body.note, by="api")
            counts["removed"] = remove_labels(store, name, body.remove) if body.remove else 0
            return {**counts, "collection": get_collection(store, name).to_dict()}

        return _run(change)

    @router.get("/{name}/detect", responses=_errors(400, 404))
    def detect(
        name: str = CollectionName,
        top_k: int = Query(100, ge=1, le=MAX_TOP_K),
        threshold: Optional[float] = Query(None, gt=0, lt=1, description="Only tiles at least this probable."),
        exhaustive: bool = Query(False, description="Score every stored vector instead of the index's candidates."),
        bbox: Optional[str] = Query(None, max_length=200, description="minlon,minlat,maxlon,maxlat (WGS84)"),
        date_from: Optional[date] = None,
        date_to: Optional[date] = None,
        max_cloud: Optional[float] = Query(None, ge=0, le=100),
    ):
        """Fit the detector on the collection's labels and rank the archive by probability: a GeoJSON
        FeatureCollection as `msearch detect --geojson` prints it (`probability`, `label` per feature; the
        fit and its cross-validation beside the features)."""
        filters = _filters(bbox, date_from, date_to, max_cloud, None)
        return _collection(_run(lambda: _detector(name).detect(top_k, threshold, filters, exhaustive)))

    @router.get("/{name}/suggest", responses=_errors(400, 404))
    def suggest(
        name: str = CollectionName,
        n: int = Query(10, ge=1, le=MAX_SUGGESTIONS),
        bbox: Optional[str] = Query(None, max_length=200, description="minlon,minlat,maxlon,maxlat (WGS84)"),
        date_from: Optional[date] = None,
        date_to: Optional[date] = None,
        max_cloud: Optional[float] = Query(None, ge=0, le=100),
    ):
        """The n unlabelled tiles whose probability is nearest 0.5: the ones to label next."""
        filters = _filters(bbox, date_from, date_to, max_cloud, None)
        return _collection(_run(lambda: _detector(name).suggest(n, filters)))

    def _detector(name: str) -> Detector:
        refresh()
        return Detector(searcher, name)

    return router


def _run(work):
    try:
        return work()
    except UnknownCollectionError as exc:
        raise ApiError(404, str(exc)) from exc
    except CollectionExistsError as exc:
        raise ApiError(409, str(exc)) from exc
    except (CollectionError, QueryError) as exc:
        raise ApiError(400, str(exc).replace("--", "")) from exc


def _collection(answer: DetectionAnswer) -> JSONResponse:
    collection = formats.geojson_collection(answer.results, answer.info())
    for feature in collection["features"]:
        feature["id"] = feature["properties"]["tile_id"]
    return JSONResponse(collection)
