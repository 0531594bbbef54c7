"""The request and response bodies of the search API, as pydantic models: FastAPI writes the OpenAPI schema
from them, and the tests hold the server's answers to them."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
from msearch.store.bridges import ROUTES

LANGUAGES = (AUTO, *SUPPORTED_LANGUAGES)
Language = Literal[LANGUAGES]
Route = Literal[ROUTES]

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
