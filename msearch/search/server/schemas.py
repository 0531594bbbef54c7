"""The request and response bodies of the search API, as pydantic models: FastAPI writes the OpenAPI schema
from them, and the tests hold the server's answers to them."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic.json_schema import SkipJsonSchema

from msearch.search.change import MODES as CHANGE_MODES
from msearch.search.language import AUTO, SUPPORTED_LANGUAGES
from msearch.search.server.params import (
    MAX_EXAMPLES,
    BboxText,
    CloudPercent,
    IsoDate,
    MgrsTile,
    Offset,
    QueryText,
    SpaceName,
    TileId,
    TopK,
)
from msearch.store.bridges import ONE_SPACE_ROUTES, ROUTES
from msearch.store.collections import LABELS, NAME_PATTERN

LANGUAGES = (AUTO, *SUPPORTED_LANGUAGES)
Language = Literal[LANGUAGES]
Route = Literal[ROUTES]
# The route a text beyond English took where scores are compared within one space (timeline, change).
ScoredRoute = Optional[Literal[ONE_SPACE_ROUTES]]
Longitude = Annotated[float, Field(ge=-180, le=180, description="WGS84 longitude.")]
Latitude = Annotated[float, Field(ge=-90, le=90, description="WGS84 latitude.")]
Probability = Annotated[float, Field(ge=0, le=1)]
IsoDay = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD.")]


def absent_or(kind, description: str):
    """A field the server leaves out rather than sending null: `name: absent_or(int, "...")` is documented
    as an optional key of type `kind` (not nullable), and is None when a body read into the model lacks it (the
    model then leaves such fields out when it writes a body: see CrossValidation)."""
    return Annotated[
        Union[kind, SkipJsonSchema[None]], Field(None, description=description, json_schema_extra=_no_default)
    ]


def _no_default(schema: dict) -> None:
    schema.pop("default", None)  # None is how the model says "absent"; the body never holds null there


# -- GeoJSON (RFC 7946), as the server writes it: positions are [lon, lat] in WGS84 --------------------------
Position = Annotated[list[float], Field(min_length=2, max_length=2, description="[longitude, latitude]")]


class Polygon(BaseModel):
    type: Literal["Polygon"]
    coordinates: list[Annotated[list[Position], Field(min_length=4)]] = Field(
        min_length=1, description="Closed rings: the exterior counter-clockwise, then any holes."
    )


class Point(BaseModel):
    type: Literal["Point"]
    coordinates: Position


Geometry = Annotated[Union[Polygon, Point], Field(discriminator="type")]


# -- searches ---------------------------------------------------------------------------------------------
class FeedbackRequest(BaseModel):
    """POST /api/search: text and/or examples, with the filters of GET /api/search. It needs a text (`q`)
    or at least one liked tile."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["q"], "properties": {"q": {"type": "string"}}},
                {"required": ["like"], "properties": {"like": {"minItems": 1}}},
            ]
        },
    )

    q: Optional[QueryText] = Field(None, description="Query text (optional with `like`); not blank.")
    like: list[TileId] = Field(default_factory=list, max_length=MAX_EXAMPLES, description="Tile ids to move toward.")
    unlike: list[TileId] = Field(
        default_factory=list, max_length=MAX_EXAMPLES, description="Tile ids to move away from."
    )
    lang: Language = "auto"
    space: Optional[SpaceName] = None
    top_k: TopK = 10
    offset: Offset = 0
    bbox: Optional[BboxText] = None
    date_from: Optional[IsoDate] = None
    date_to: Optional[IsoDate] = None
    max_cloud: Optional[CloudPercent] = None
    tile_id: Optional[MgrsTile] = None
    all_acquisitions: bool = Field(False, description="One result per acquisition instead of per place.")

    @model_validator(mode="after")
    def text_or_examples(self):
        if self.q is None and not self.like:
            raise ValueError("give a query text `q` or at least one liked tile in `like`")
        return self


class ResultProperties(BaseModel):
    rank: int = Field(ge=1, description="1 for the best match, counted from the first result (not the page).")
    score: float = Field(description="Similarity (cosine, or fused reciprocal-rank score with fuse).")
    tile_id: int = Field(ge=1)
    path: str = Field(description="The file as indexed, relative to `root`.")
    root: str = Field(description="The archive folder it was indexed under.")
    space: str = Field(description="The embedding space searched.")
    lon: Optional[float] = Field(ge=-180, le=180, description="Centre longitude, WGS84.")
    lat: Optional[float] = Field(ge=-90, le=90, description="Centre latitude, WGS84.")
    date: Optional[str] = Field(description="Acquisition time, ISO 8601.")
    tile: Optional[str] = Field(description="MGRS tile.")
    cloud: Optional[float] = Field(description="Cloud cover, percent.")
    place_id: Optional[int] = Field(None, description="The place the tile is an acquisition of.")
    acquisitions: Optional[int] = Field(
        None, ge=1, description="Per place: how many of its acquisitions pass the filters (null per acquisition)."
    )
    dates: Optional[list[Optional[str]]] = Field(
        None, max_length=20, description="Per place: its passing acquisitions' times, best first (at most 20)."
    )
    date_tile_ids: Optional[list[int]] = Field(None, max_length=20, description="Per place: the tile of each date.")


class ResultFeature(BaseModel):
    type: Literal["Feature"]
    id: int = Field(ge=1, description="The tile id.")
    geometry: Optional[Geometry] = Field(description="The footprint, else a Point at the centre, else null.")
    properties: ResultProperties


class SearchAnswer(BaseModel):
    """A GeoJSON FeatureCollection, best first, with the search's description as foreign members."""

    type: Literal["FeatureCollection"]
    query: str = Field(description="The text as asked (for examples alone: `like:ID,...`).")
    lang: Optional[Language] = Field(description="The language the text was read as (null without text).")
    space: str = Field(description="The space(s) searched, joined by '+' when fused.")
    route: Optional[Route] = Field(description="Beyond English: how the query reached the index.")
    truncated: bool = Field(description="Whether the text was cut to the text encoder's 77 tokens.")
    matching_tiles: Optional[int] = Field(ge=0, description="Tiles that pass the filters (null without filters).")
    per_place: bool = Field(description="Whether each result is a place (else an acquisition: all_acquisitions).")
    offset: int = Field(ge=0)
    returned: int = Field(ge=0, description="Features in this answer.")
    features: list[ResultFeature]


class FeedbackAnswer(SearchAnswer):
    like: list[int]
    unlike: list[int]


# -- tiles, info, health -----------------------------------------------------------------------------------
class TileFields(BaseModel):
    """A catalogued tile: every column of the catalogue's `tiles` table (msearch.schema.catalog)."""

    id: int = Field(ge=1)
    root: str = Field(description="The folder given to `msearch index`, absolute.")
    key: str = Field(description="Relative path (+ '#col,row,width,height' for chips).")
    path: str = Field(description="Relative path of the file or folder.")
    reader: str
    stat_signature: str = Field(description="Size and mtime of its files: the cheap change check.")
    size: Optional[int] = Field(description="Bytes, all files together.")
    mtime: Optional[float] = Field(description="Latest modification time of its files (POSIX seconds).")
    digest: Optional[str] = Field(description="sha256 over the contents of its files.")
    crs: Optional[str]
    width: Optional[int]
    height: Optional[int]
    pixel_size: Optional[float]
    min_lon: Optional[float]
    min_lat: Optional[float]
    max_lon: Optional[float]
    max_lat: Optional[float]
    centre_lon: Optional[float]
    centre_lat: Optional[float]
    footprint: Optional[Polygon] = Field(description="WGS84 GeoJSON Polygon.")
    bands: Optional[str] = Field(description="Comma-separated band names present, canonical order.")
    file_band_order: Optional[str]
    offset: Optional[float] = Field(description="Radiometric offset the stored values carry.")
    level: Optional[str]
    acquired: Optional[str] = Field(description="Acquisition time, ISO 8601 UTC.")
    product: Optional[str]
    mgrs_tile: Optional[str]
    processing_baseline: Optional[str]
    cloud_cover: Optional[float] = Field(description="Percent.")
    nodata_fraction: Optional[float]
    scene: Optional[str] = Field(description="Chips: the scene they were cut from.")
    window: Optional[str] = Field(description="Chips: 'col,row,width,height' on the 10 m grid.")
    origin_x: Optional[float] = Field(None, description="Upper-left corner of the tile's grid, CRS units.")
    origin_y: Optional[float] = Field(None, description="Upper-left corner of the tile's grid, CRS units.")
    pixel_height: Optional[float] = Field(None, description="The grid's y pixel size, CRS units.")
    place_id: Optional[int] = Field(None, description="The place the tile is an acquisition of.")
    run_id: Optional[int]
    indexed_at: Optional[str]


# -- places ------------------------------------------------------------------------------------------------
class PlaceFields(BaseModel):
    """GET /api/places/{id}: a place's grid, footprint and centre, and every acquisition of it in date order."""

    place_id: int = Field(ge=1)
    crs: Optional[str]
    pixel_size: Optional[float]
    pixel_height: Optional[float]
    width: Optional[int]
    height: Optional[int]
    origin: Optional[Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(
        description="The grid's upper-left corner [x, y], CRS units."
    )
    lon: Optional[float] = Field(description="Centre longitude, WGS84.")
    lat: Optional[float] = Field(description="Centre latitude, WGS84.")
    bbox: Annotated[list[Optional[float]], Field(min_length=4, max_length=4)] = Field(
        description="min lon, min lat, max lon, max lat (WGS84)."
    )
    footprint: Optional[Polygon] = Field(description="WGS84 GeoJSON Polygon.")
    acquisitions: list[TileFields] = Field(description="Every tile of the place, in date order.")


class Limits(BaseModel):
    max_top_k: int
    max_query_chars: int
    max_examples: int


class SpaceInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    space: str
    dim: int
    metric: str
    vectors: int


class InfoReport(BaseModel):
    """What `msearch info --json` reports, with the languages of each space and the request limits."""

    model_config = ConfigDict(extra="allow")

    directory: str
    catalogue: str
    tiles: int = Field(ge=0)
    spaces: list[SpaceInfo]
    bridges: list[dict]
    limits: Limits
    languages: dict[str, list[str]]


class Health(BaseModel):
    status: Literal["ok"]


# -- places over time ----------------------------------------------------------------------------------------
class TimelineAcquisition(BaseModel):
    tile_id: int = Field(ge=1)
    date: Optional[str] = Field(description="Acquisition time, ISO 8601.")
    score: Optional[float] = Field(
        description="The score the query gives this tile (as GET /api/search would); null when the tile has no "
        "vector in the space."
    )
    cloud: Optional[float] = Field(description="Cloud cover, percent.")
    nodata: Optional[Probability] = Field(description="Share of the tile's pixels that are nodata.")
    path: str = Field(description="The tile's key: relative path (+ '#col,row,width,height' for chips).")
    level: Optional[str] = Field(description="Processing level (L1C, L2A).")


class PlaceTimeline(BaseModel):
    """GET /api/places/{id}/timeline: every acquisition of the place in date order, scored (`msearch timeline
    --json`)."""

    place_id: int = Field(ge=1)
    query: str = Field(description="The text as asked, or `like:TILE_ID` for an example.")
    lang: Optional[Language] = Field(description="The language the text was read as (null for an example).")
    space: str = Field(description="The embedding space scored in.")
    route: ScoredRoute = Field(description="How a text beyond English was read (null for English or an example).")
    lon: Optional[Longitude] = Field(description="The place's centre.")
    lat: Optional[Latitude] = Field(description="The place's centre.")
    footprint: Optional[Polygon] = Field(description="The place's footprint, WGS84.")
    acquisitions: list[TimelineAcquisition] = Field(min_length=1, description="In date order (then tile id).")


class ChangeProperties(BaseModel):
    """A place ranked by change. Scores are medians over each period's used acquisitions (the clear ones,
    else all of them); which of them are set depends on the mode (the others are null)."""

    rank: int = Field(ge=1)
    change: float = Field(
        description="to / to-like: after_score - before_score (+ from_before_score - from_after_score with from); "
        "any: 1 - similarity. Larger is more change."
    )
    place_id: int = Field(ge=1)
    space: str
    before_acquisitions: int = Field(ge=1, description="Acquisitions of the earlier period that pass the filters.")
    after_acquisitions: int = Field(ge=1, description="Acquisitions of the later period that pass the filters.")
    before_used: int = Field(ge=1, description="Of those, the ones the statistics use (the clear ones, else all).")
    after_used: int = Field(ge=1, description="Of those, the ones the statistics use (the clear ones, else all).")
    before_tile_id: int = Field(ge=1, description="The earlier period's representative acquisition.")
    after_tile_id: int = Field(ge=1, description="The later period's representative acquisition.")
    before_score: Optional[float] = Field(description="to / to-like: the earlier period's median score.")
    after_score: Optional[float] = Field(description="to / to-like: the later period's median score.")
    from_before_score: Optional[float] = Field(description="With from: the earlier period's median for that text.")
    from_after_score: Optional[float] = Field(description="With from: the later period's median for that text.")
    similarity: Optional[float] = Field(description="any: the cosine of the two periods' median vectors.")
    lon: Optional[Longitude] = Field(description="The place's centre.")
    lat: Optional[Latitude] = Field(description="The place's centre.")


class ChangeFeature(BaseModel):
    type: Literal["Feature"]
    id: int = Field(ge=1, description="The place id.")
    geometry: Optional[Geometry] = Field(description="The place's footprint, else a Point at its centre, else null.")
    properties: ChangeProperties


class ChangeAnswer(BaseModel):
    """GET /api/change: a GeoJSON FeatureCollection of places, most changed first, with the query's
    description as foreign members (`msearch change --geojson`)."""

    type: Literal["FeatureCollection"]
    query: str = Field(description="The `to` text (`FROM -> TO` with from), `like:TILE_ID`, or `any`.")
    lang: Optional[Language] = Field(description="The language the text was read as (null without text).")
    space: str
    route: ScoredRoute = Field(description="How a `to` text beyond English was read (null otherwise).")
    mode: Literal[CHANGE_MODES]
    after: IsoDay = Field(description="Acquisitions on or after it are the later period.")
    before: IsoDay = Field(description="Acquisitions before it are the earlier period.")
    archive_dates: Annotated[list[IsoDay], Field(min_length=2, max_length=2)] = Field(
        description="The first and last acquisition dates of the space's tiles."
    )
    places_compared: int = Field(ge=0, description="Places with acquisitions in both periods.")
    left_out: int = Field(ge=0, description="Places with acquisitions missing from one of the periods.")
    features: list[ChangeFeature]


# -- collections and detectors ---------------------------------------------------------------------------------
CollectionName = Annotated[str, Field(pattern=NAME_PATTERN.pattern, max_length=128)]
Timestamp = Annotated[str, Field(description="ISO 8601, UTC, to the second.")]


class CollectionSummary(BaseModel):
    name: CollectionName
    space: str = Field(description="The embedding space its examples are in.")
    note: Optional[str]
    created_by: Optional[str] = Field(description="`api`, or the user who ran the command.")
    created_at: Timestamp
    positives: int = Field(ge=0, description="Positive labels, missing tiles included.")
    negatives: int = Field(ge=0, description="Negative labels, missing tiles included.")


class CollectionList(BaseModel):
    """GET /api/collections: every collection, by name."""

    collections: list[CollectionSummary]


class CollectionLabel(BaseModel):
    """A labelled example: a catalogued tile (by root and key, which survive index runs) or a file."""

    label: Literal[LABELS]
    tile_id: Optional[int] = Field(ge=1, description="The tile's current id; null for a file or a missing tile.")
    root: Optional[str] = Field(description="The tile's archive folder; null for a file.")
    key: Optional[str] = Field(description="The tile's key under root; null for a file.")
    file: Optional[str] = Field(description="A file example's absolute path when it was embedded; null for a tile.")
    note: Optional[str]
    added_by: Optional[str]
    added_at: Timestamp


class CollectionDetail(BaseModel):
    """A collection with its labels: GET /api/collections/{name}/labels, and the answer of a creation."""

    name: CollectionName
    space: str = Field(description="The embedding space its examples are in.")
    note: Optional[str]
    created_by: Optional[str] = Field(description="`api`, or the user who ran the command.")
    created_at: Timestamp
    positives: int = Field(ge=0, description="Positive labels of catalogued tiles and files.")
    negatives: int = Field(ge=0, description="Negative labels of catalogued tiles and files.")
    missing: int = Field(ge=0, description="Labels of tiles no longer in the index (len of missing_tiles).")
    labels: list[CollectionLabel] = Field(description="Catalogued tiles and files, in the order labelled.")
    missing_tiles: list[CollectionLabel] = Field(description="Labelled tiles no longer in the index (kept).")


class LabelsChanged(BaseModel):
    """POST /api/collections/{name}/labels: what changed, and the collection after."""

    added: int = Field(ge=0, description="Tiles labelled that were not before.")
    changed: int = Field(ge=0, description="Tiles labelled before that took the other label.")
    removed: int = Field(ge=0, description="Labels removed (`remove`).")
    collection: CollectionDetail


class CollectionDeleted(BaseModel):
    deleted: CollectionName
    labels: int = Field(ge=0, description="How many labels went with it.")


class CrossValidation(BaseModel):
    """The probe's stratified cross-validation on its own examples; the scores are left out with fewer
    than 2 folds."""

    folds: int = Field(ge=1)
    precision: absent_or(Probability, "At probability >= 0.5.")
    recall: absent_or(Probability, "At probability >= 0.5.")
    average_precision: absent_or(Probability, "Over the held-out probabilities.")

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, write):
        return {name: value for name, value in write(self).items() if value is not None}


class ProbeFit(BaseModel):
    positives: int = Field(ge=2)
    negatives: int = Field(ge=0, description="Labelled negatives.")
    background_negatives: int = Field(ge=0, description="Unlabelled tiles drawn from the archive as negatives.")
    regularisation_c: float = Field(gt=0, description="C of the logistic regression (inverse L2 strength).")
    cross_validation: CrossValidation


class DetectionProperties(ResultProperties):
    score: float = Field(description="The probe's decision value w.x + b (the probability's logit).")
    probability: Probability
    label: Optional[Literal[LABELS]] = Field(description="The tile's label in the collection; null if unlabelled.")


class DetectionFeature(ResultFeature):
    properties: DetectionProperties


class Detections(BaseModel):
    """GET /api/collections/{name}/detect and .../suggest: a GeoJSON FeatureCollection of tiles (or places, with
    per_place) by probability, with the detector's fit as foreign members (`msearch detect --geojson`)."""

    type: Literal["FeatureCollection"]
    query: str = Field(description="`detect:NAME`.")
    lang: None = Field(description="Always null: a detector reads no text.")
    space: str = Field(description="The collection's space, scored in.")
    collection: CollectionName
    fit: ProbeFit
    candidates_scored: int = Field(ge=0, description="Tiles scored exactly.")
    exhaustive: bool = Field(description="Whether every stored vector was scored (else the index's candidates).")
    truncated: bool = Field(description="Whether the candidate search stopped at its deepest.")
    matching_tiles: Optional[int] = Field(ge=0, description="Tiles that pass the filters (null without filters).")
    missing_labels: list[str] = Field(description="Labelled tiles no longer in the index, as root/key.")
    suggestions: bool = Field(description="Whether these are suggestions (nearest probability 0.5, unlabelled).")
    per_place: bool = Field(description="Whether each feature is a place (its most probable acquisition).")
    features: list[DetectionFeature]


# -- heat maps -----------------------------------------------------------------------------------------------
class OutlineProperties(BaseModel):
    tile_id: int = Field(ge=1)
    mean_score: float = Field(description="The mean score of the outline's patches.")
    max_score: float = Field(description="The highest score of the outline's patches.")
    patches: int = Field(ge=1, description="Patches inside the outline.")


class OutlineFeature(BaseModel):
    type: Literal["Feature"]
    geometry: Polygon = Field(description="Adjacent patches at or above the threshold, merged; WGS84.")
    properties: OutlineProperties


class OutlineSummary(BaseModel):
    tile_id: int = Field(ge=1)
    space: str
    threshold: float = Field(description="The score an outlined patch reaches.")
    threshold_method: Literal["otsu", "given"] = Field(description="Otsu's threshold of the tile, or `threshold`.")
    patches: int = Field(ge=0, description="Patches of the tile with a score (not nodata).")


class Outlines(BaseModel):
    """GET /api/tiles/{id}/locate: a GeoJSON FeatureCollection of the best-scoring patches' outlines, best
    first (`msearch locate`), with the tile's threshold as the collection's `properties`."""

    type: Literal["FeatureCollection"]
    features: list[OutlineFeature]
    properties: OutlineSummary
