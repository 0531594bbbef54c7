"""The HTTP API and the web page of `msearch serve`, over one warm Searcher.

Endpoints (errors are {"error": "what to change"}; msearch.search.server.contract says which status means what):
    GET  /api/search                 a text search; a GeoJSON FeatureCollection, ranked as `msearch query`:
                                     places by default, one feature per acquisition with all_acquisitions
    POST /api/search                 relevance feedback: text and/or liked and unliked tile ids (Searcher.feedback)
    GET  /api/places/{id}            a place and its acquisitions (msearch.search.server.places)
    GET  /api/tiles/{id}             a catalogued tile's fields
    GET  /api/tiles/{id}/quicklook.png   its true-colour quicklook (msearch.search.quicklook's stretch)
    GET  /api/tiles/{id}/heatmap.png, heatmap.tif, locate   where in it a query matches (server/heatmaps.py)
    GET  /api/info                   spaces, counts, index kinds (msearch info's report)
    GET  /api/places/{id}/timeline   a place's acquisitions in date order, scored (msearch.search.server.places_time)
    GET  /api/change                 places ranked by change between dates (msearch.search.server.places_time)
    GET  /api/openapi.json           the OpenAPI schema
    /api/collections/...             collections of labelled examples and their detectors (collections.py)
    GET  /health                     liveness, no token needed
    GET  /  and  /static/{name}      the page and the files it loads, all shipped with the package

Nothing reads a path given by a client: tiles are looked up by catalogue id, and the static files are a fixed
table built at startup. With a token every /api request needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Optional

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from msearch import __version__
from msearch.search import formats
from msearch.search.quicklook import png_bytes, true_colour
from msearch.search.searcher import Filters, QueryAnswer, QueryError, Searcher
from msearch.search.server import contract, params
from msearch.search.server.collections import collections_router
from msearch.search.server.contract import ApiError, errors
from msearch.search.server.heatmaps import heatmap_router
from msearch.search.server.params import MAX_EXAMPLES, MAX_QUERY_CHARS, MAX_TOP_K, TileId, parse_bbox
from msearch.search.server.places import places_router
from msearch.search.server.places_time import places_time_router
from msearch.search.server.schemas import (
    FeedbackAnswer,
    FeedbackRequest,
    Health,
    InfoReport,
    Language,
    Route,
    SearchAnswer,
    TileFields,
)
from msearch.store import SpaceMismatchError
from msearch.store.report import index_report

QUICKLOOK_CACHE = 256  # PNGs kept in memory, by tile id and file signature
QUERY_MEMORY = 10_000  # query embeddings kept in memory in front of the shared on-disk query cache
REFRESH_SECONDS = 1.0  # how often requests look for tiles that index runs committed since
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
STATIC = Path(__file__).parent / "static"
# What a search answers 422 to: the rules across values that the schema cannot state.
SEARCH_RULES = (
    "The request matches the schema but cannot be answered: top_k + offset over the limit; a bbox outside "
    "WGS84 or with min > max; date_from after date_to; a space not in this index, or one that does not read "
    "the language; fuse with a space; a route for English or with a space or fuse; text in a script none of "
    "the encoders read; (POST) a tile both liked and unliked, liked tiles not in the index or without vectors "
    "in the space, examples that cancel out."
)
SEARCH_ERRORS = errors(409, 422, why={422: SEARCH_RULES})
TILE_ERRORS = errors(404, why={404: "No tile with this id (or the path names no tile id)."})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token: anyone who can reach the port could search."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"--host {host} makes the server reachable from other machines: give --token TOKEN "
            f"(or set MSEARCH_TOKEN), which every /api request must then send as `Authorization: Bearer TOKEN`"
        )


def create_app(
    searcher: Searcher,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    refresh_seconds: float = REFRESH_SECONDS,
) -> FastAPI:
    """The application over a searcher (made by the caller, with the pixel reader quicklooks need).

    `allowed_hosts`: Host headers accepted (None: any). Without a token, `msearch serve` accepts only
    loopback names, so that a web page on another site cannot reach it through DNS rebinding.
    `refresh_seconds`: at most this often a search first brings the searcher up to date with index runs.

    For serving, the searcher's query cache gets an in-memory layer (a hit on disk is a SQLite write, to
    record its use)."""
    if searcher.query_cache is not None and not isinstance(searcher.query_cache, MemoryQueryCache):
        searcher.query_cache = MemoryQueryCache(searcher.query_cache, QUERY_MEMORY)
    refresher = Refresher(searcher, refresh_seconds)
    app = FastAPI(
        title="msearch",
        version=__version__,
        description="Text search over Sentinel-2 archives (see README.md, `msearch serve`).",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: the schema alone is served
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    contract.install(app, token)
    quicklooks = QuicklookCache(searcher, QUICKLOOK_CACHE)
    static_files = _static_table()
    expected = f"Bearer {token}".encode() if token else None

    @app.middleware("http")
    async def require_host_and_token(request: Request, call_next):
        if allowed_hosts is not None and _host_name(request.headers.get("host", "")) not in allowed_hosts:
            names = ", ".join(allowed_hosts)
            return JSONResponse({"error": f"this server answers only requests addressed to {names}"}, 400)
        if expected is not None and request.url.path.startswith("/api"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {"error": "this server needs a token: send `Authorization: Bearer TOKEN`"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    @app.get("/health", response_model=Health)
    def health():
        return {"status": "ok"}

    @app.get("/api/info", response_model=InfoReport)
    def info():
        """Spaces, tile and vector counts and search index kinds: what `msearch info --json` reports."""
        report = index_report(searcher.store.directory)
        report["limits"] = {"max_top_k": MAX_TOP_K, "max_query_chars": MAX_QUERY_CHARS, "max_examples": MAX_EXAMPLES}
        report["languages"] = {name: card.languages for name, card in searcher.spaces().items()}
        return report

    @app.get("/api/search", response_model=SearchAnswer, responses=SEARCH_ERRORS)
    def search(
        q: Annotated[params.QueryText, Query()],
        lang: Annotated[Language, Query()] = "auto",
        space: Annotated[Optional[params.SpaceName], Query()] = None,
        fuse: Annotated[bool, Query(description="Merge every space that reads the query (rank fusion).")] = False,
        top_k: Annotated[params.TopK, Query()] = 10,
        offset: Annotated[params.Offset, Query()] = 0,
        bbox: Annotated[Optional[params.BboxText], Query()] = None,
        date_from: Annotated[Optional[params.IsoDate], Query()] = None,
        date_to: Annotated[Optional[params.IsoDate], Query(description="The last day, included.")] = None,
        max_cloud: Annotated[Optional[params.CloudPercent], Query()] = None,
        tile_id: Annotated[Optional[params.MgrsTile], Query()] = None,
        route: Annotated[Optional[Route], Query(description="Beyond English: rgb, bridge or fuse.")] = None,
        all_acquisitions: Annotated[
            bool, Query(description="One result per acquisition instead of per place.")
        ] = False,
    ):
        """A text search, ranked exactly as `msearch query` ranks it; results `offset` to `offset + top_k`.
        Each result is a place (its best acquisition, `place_id`, `acquisitions`, `dates`), or with
        `all_acquisitions=true` an acquisition."""
        _check_window(top_k, offset)
        filters = _filters(bbox, date_from, date_to, max_cloud, tile_id)
        answer = _answer(
            lambda: searcher.query(
                q,
                top_k=offset + top_k,
                lang=lang,
                space=space,
                fuse=fuse,
                filters=filters,
                route=route,
                all_acquisitions=all_acquisitions,
            )
        )
        return _geojson(answer, offset)

    @app.post("/api/search", response_model=FeedbackAnswer, responses=SEARCH_ERRORS)
    def feedback(body: FeedbackRequest):
        """Relevance feedback: q = normalise(1.0 t + 0.75 mean(like) - 0.15 mean(unlike)) (Rocchio on unit
        vectors; t the text's vector, left out without text). The examples are left out of the results."""
        _check_window(body.top_k, body.offset)
        filters = _filters(body.bbox, body.date_from, body.date_to, body.max_cloud, body.tile_id)
        answer = _answer(
            lambda: searcher.feedback(
                body.q,
                like=body.like,
                unlike=body.unlike,
                top_k=body.offset + body.top_k,
                lang=body.lang,
                space=body.space,
                filters=filters,
                all_acquisitions=body.all_acquisitions,
            )
        )
        return _geojson(answer, body.offset, like=body.like, unlike=body.unlike)

    @app.get("/api/tiles/{tile_id}", response_model=TileFields, responses=TILE_ERRORS)
    def tile(tile_id: Annotated[TileId, PathParam()]):
        """A catalogued tile's fields: file, archive root, footprint, date, cloud cover, MGRS tile, scene."""
        row = _tile_row(searcher, tile_id)
        row["footprint"] = json.loads(row["footprint"]) if row.get("footprint") else None
        return row

    @app.get(
        "/api/tiles/{tile_id}/quicklook.png",
        response_class=PngResponse,
        responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}
        | errors(404, why={404: "No tile with this id, or its file can no longer be read."}),
    )
    def quicklook(tile_id: Annotated[TileId, PathParam()]):
        """True colour (B04, B03, B02), 2-98 percentile stretch: the same picture as `msearch query --html`."""
        row = _tile_row(searcher, tile_id)
        try:
            image = quicklooks.get(row)
        except Exception as exc:  # the file moved or broke since it was indexed: say so, do not crash
            raise ApiError(404, f"tile {row['id']} has no quicklook: {exc}") from exc
        return PngResponse(image, headers={"Cache-Control": "private, max-age=300"})

    app.include_router(heatmap_router(searcher))
    app.include_router(collections_router(searcher, refresher.maybe_refresh, _filters))

    app.include_router(places_router(searcher))
    app.include_router(places_time_router(searcher, refresher.maybe_refresh, _filters))

    @app.get("/", response_class=Response, include_in_schema=False)
    def page():
        return _static_response(static_files, "index.html")

    @app.get("/static/{name:path}", response_class=Response, include_in_schema=False)
    def static(name: str):
        return _static_response(static_files, name)

    def _answer(run) -> QueryAnswer:
        try:
            refresher.maybe_refresh()  # tiles an index run committed since
            return run()
        except QueryError as exc:
            raise ApiError(422, str(exc)) from exc
        except SpaceMismatchError as exc:
            raise ApiError(409, str(exc)) from exc

    return app


def one_thread_per_request() -> None:
    """Give the process's BLAS and OpenMP pools (numpy's text towers, FAISS) one thread each: concurrent
    requests are the server's parallelism, and threads inside one small computation only spin against each
    other on a busy machine (a warm text encoding measured 0.2 s with one thread and 2 to 5 s with two on
    the 2-core build machine under load; a 5,000-vector search 32 ms with FAISS's default threads)."""
    import faiss
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    faiss.omp_set_num_threads(1)  # FAISS may link an OpenMP runtime of its own


class Refresher:
    """Calls searcher.refresh() at most every `seconds`, from one request at a time (others go on searching
    what is loaded)."""

    def __init__(self, searcher: Searcher, seconds: float):
        self.searcher = searcher
        self.seconds = seconds
        self._last = float("-inf")
        self._lock = threading.Lock()

    def maybe_refresh(self) -> None:
        if time.monotonic() - self._last < self.seconds or not self._lock.acquire(blocking=False):
            return
        try:
            self.searcher.refresh()
            self._last = time.monotonic()
        finally:
            self._lock.release()


class MemoryQueryCache:
    """The most recently used query embeddings in memory, in front of the shared QueryCache."""

    def __init__(self, shared, size: int):
        self.shared = shared
        self.size = size
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, card: str, weights_sha256: str, text: str):
        key = (card, weights_sha256, text)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        found = self.shared.get(card, weights_sha256, text)
        if found is not None:
            self._remember(key, found)
        return found

    def put(self, card: str, weights_sha256: str, text: str, vector, truncated: bool) -> None:
        self.shared.put(card, weights_sha256, text, vector, truncated)
        self._remember((card, weights_sha256, text), (vector, truncated))

    def _remember(self, key: tuple, value: tuple) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class QuicklookCache:
    """PNG quicklooks of recent tiles, by tile id and the file signature the catalogue holds for it (a
    re-indexed, changed file gets a new picture)."""

    def __init__(self, searcher: Searcher, size: int):
        self.searcher = searcher
        self.size = size
        self._images: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, row: dict) -> bytes:
        key = (row["id"], row.get("stat_signature"))
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        image = png_bytes(true_colour(self.searcher.tile_pixels(row["id"])))
        with self._lock:
            self._images[key] = image
            while len(self._images) > self.size:
                self._images.popitem(last=False)
        return image


class PngResponse(Response):
    media_type = "image/png"


def _tile_row(searcher: Searcher, tile_id: int) -> dict:
    # The id is only ever a catalogue key (TileId: anything but a number, a path or `..`, is a 404).
    row = searcher.store.tiles_by_id([tile_id]).get(tile_id)
    if row is None:
        raise ApiError(404, f"no tile with id {tile_id} in this index")
    return row


def _host_name(host: str) -> str:
    """The name in a Host header, without the port: '127.0.0.1:8765' -> '127.0.0.1', '[::1]:80' -> '[::1]'."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.split(":")[0]


def _check_window(top_k: int, offset: int) -> None:
    if top_k + offset > MAX_TOP_K:
        raise ApiError(422, f"top_k + offset may be at most {MAX_TOP_K}, got {top_k} + {offset}")


def _filters(bbox, date_from, date_to, max_cloud, tile_id) -> Filters:
    box = parse_bbox(bbox) if bbox else None  # the schema's pattern held: four numbers
    try:
        return Filters(bbox=box, date_from=date_from, date_to=date_to, max_cloud=max_cloud, tile_id=tile_id)
    except QueryError as exc:
        raise ApiError(422, str(exc).replace("--", "")) from exc


def _geojson(answer: QueryAnswer, offset: int, **extra) -> JSONResponse:
    """The --geojson FeatureCollection of the window, with the search's description beside it. Serialised
    here, not by FastAPI's encoder: the collection is plain JSON already, and encoding it twice doubled the
    cost of a warm request."""
    info = dict(answer.info(), offset=offset, returned=len(answer.results[offset:]), **extra)
    collection = formats.geojson_collection(answer.results[offset:], info)
    for feature in collection["features"]:
        feature["id"] = feature["properties"]["tile_id"]
    return JSONResponse(collection)


def _static_table() -> dict[str, tuple[Path, str]]:
    """Every file the page may load, by the name it is asked for: the page's own and Leaflet's."""
    import xstatic.pkg.leaflet as leaflet

    types = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css",
        ".geojson": "application/geo+json",
        ".png": "image/png",
        ".svg": "image/svg+xml",
    }
    table = {}
    for path in sorted(STATIC.iterdir()):
        if path.suffix in types:
            table[path.name] = (path, types[path.suffix])
    leaflet_dir = Path(leaflet.BASE_DIR)
    for name in ("leaflet.js", "leaflet.css"):
        table[f"leaflet/{name}"] = (leaflet_dir / name, types[Path(name).suffix])
    for path in sorted((leaflet_dir / "images").glob("*.png")):
        table[f"leaflet/images/{path.name}"] = (path, "image/png")
    return table


def _static_response(table: dict[str, tuple[Path, str]], name: str) -> Response:
    if name not in table:
        raise ApiError(404, "not found")
    path, media_type = table[name]
    return Response(path.read_bytes(), media_type=media_type, headers={"Cache-Control": "no-cache"})
