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

from typing import Annotated, Callable, Optional

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from msearch.search import formats
from msearch.search.detect import DetectionAnswer, Detector, FittedDetectors
from msearch.search.searcher import Filters, QueryError, Searcher
from msearch.search.server import params
from msearch.search.server.contract import ApiError, errors
from msearch.search.server.params import MAX_EXAMPLES, TileId
from msearch.search.server.schemas import (
    CollectionDeleted,
    CollectionDetail,
    CollectionList,
    Detections,
    LabelsChanged,
)
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

CollectionName = Annotated[
    str, Path(pattern=NAME_PATTERN.pattern, max_length=128, description="The collection's name.")
]
MAX_SUGGESTIONS = 100
UNKNOWN = {404: "No collection of this name."}
RULES = {
    422: "A label or detector the collection cannot give: a tile not in the index (or without a vector in the "
    "collection's space), a tile both positive and negative, fewer than 2 positive examples."
}


class NewCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN.pattern, max_length=128)
    space: Optional[params.SpaceName] = Field(None, description="Default: the multispectral space.")
    note: Optional[str] = Field(None, max_length=1000)


class LabelChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positive: list[TileId] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    negative: list[TileId] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    remove: list[TileId] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    note: Optional[str] = Field(None, max_length=1000)


def collections_router(
    searcher: Searcher, refresh: Callable[[], None], request_filters: Callable[..., Filters]
) -> APIRouter:
    """The routes over a searcher; `refresh` brings it up to date with index runs before a detector scores,
    `request_filters(bbox, date_from, date_to, max_cloud, tile_id)` reads the filters as /api/search does."""
    router = APIRouter(prefix="/api/collections", tags=["collections"])
    detectors = FittedDetectors(searcher)
    store = searcher.store

    @router.get("", response_model=CollectionList)
    def collections():
        """The collections, each with its space, note and counts of positive and negative labels."""
        return {"collections": list_collections(store)}

    @router.post(
        "",
        status_code=201,
        response_model=CollectionDetail,
        responses=errors(409, 422, why={409: "A collection of this name exists already.", 422: "No such space."}),
    )
    def create(body: NewCollection):
        """Create an empty collection in a space (default: the multispectral one)."""
        return _run(
            lambda: create_collection(store, body.name, searcher.example_space(body.space), body.note, "api").to_dict()
        )

    @router.delete("/{name}", response_model=CollectionDeleted, responses=errors(404, why=UNKNOWN))
    def delete(name: CollectionName):
        """Delete a collection and its labels."""
        return {"deleted": name, "labels": _run(lambda: delete_collection(store, name))}

    @router.get("/{name}/labels", response_model=CollectionDetail, responses=errors(404, why=UNKNOWN))
    def labels(name: CollectionName):
        """The collection, its labels and the labelled tiles no longer in the index (`missing_tiles`)."""
        return _run(lambda: get_collection(store, name).to_dict())

    @router.post("/{name}/labels", response_model=LabelsChanged, responses=errors(404, 422, why=UNKNOWN | RULES))
    def label(body: LabelChange, name: CollectionName):
        """Label tiles positive or negative (a tile labelled before takes its new label) and remove labels; then
        the collection as GET .../labels gives it."""

        def change() -> dict:
            counts = add_labels(store, name, body.positive, body.negative, note=body.note, by="api")
            counts["removed"] = remove_labels(store, name, body.remove) if body.remove else 0
            return {**counts, "collection": get_collection(store, name).to_dict()}

        return _run(change)

    @router.get("/{name}/detect", response_model=Detections, responses=errors(404, 422, why=UNKNOWN | RULES))
    def detect(
        name: CollectionName,
        top_k: Annotated[params.TopK, Query()] = 100,
        threshold: Annotated[
            Optional[float], Query(gt=0, lt=1, description="Only tiles at least this probable.")
        ] = None,
        exhaustive: Annotated[
            bool, Query(description="Score every stored vector, not the index's candidates.")
        ] = False,
        per_place: Annotated[
            bool, Query(description="Places, each by its most probable acquisition, instead of tiles.")
        ] = False,
        bbox: Annotated[Optional[params.BboxText], Query()] = None,
        date_from: Annotated[Optional[params.IsoDate], Query()] = None,
        date_to: Annotated[Optional[params.IsoDate], Query(description="The last day, included.")] = None,
        max_cloud: Annotated[Optional[params.CloudPercent], Query()] = None,
    ):
        """Fit the detector on the collection's labels and rank the archive by probability: a GeoJSON
        FeatureCollection as `msearch detect --geojson` prints it (`probability`, `label` per feature; the
        fit and its cross-validation beside the features)."""
        filters = request_filters(bbox, date_from, date_to, max_cloud, None)
        return _collection(_run(lambda: _detector(name).detect(top_k, threshold, filters, exhaustive, per_place)))

    @router.get("/{name}/suggest", response_model=Detections, responses=errors(404, 422, why=UNKNOWN | RULES))
    def suggest(
        name: CollectionName,
        n: Annotated[params.integer(ge=1, le=MAX_SUGGESTIONS, description="How many tiles."), Query()] = 10,
        bbox: Annotated[Optional[params.BboxText], Query()] = None,
        date_from: Annotated[Optional[params.IsoDate], Query()] = None,
        date_to: Annotated[Optional[params.IsoDate], Query(description="The last day, included.")] = None,
        max_cloud: Annotated[Optional[params.CloudPercent], Query()] = None,
    ):
        """The n unlabelled tiles whose probability is nearest 0.5: the ones to label next."""
        filters = request_filters(bbox, date_from, date_to, max_cloud, None)
        return _collection(_run(lambda: _detector(name).suggest(n, filters)))

    def _detector(name: str) -> Detector:
        refresh()
        return detectors.get(name)

    return router


def _run(work):
    try:
        return work()
    except UnknownCollectionError as exc:
        raise ApiError(404, str(exc)) from exc
    except CollectionExistsError as exc:
        raise ApiError(409, str(exc)) from exc
    except (CollectionError, QueryError) as exc:
        raise ApiError(422, str(exc).replace("--", "")) from exc


def _collection(answer: DetectionAnswer) -> JSONResponse:
    collection = formats.geojson_collection(answer.results, answer.info())
    for feature in collection["features"]:
        feature["id"] = feature["properties"]["tile_id"]
    return JSONResponse(collection)
