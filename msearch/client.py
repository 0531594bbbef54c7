"""A client of `msearch serve`'s HTTP API, for notebooks and scripts.

It needs only httpx and the standard library (`pip install 'msearch[client]'`): no models, no index, nothing
of msearch's layers, so it runs wherever the server can be reached.

    from msearch.client import Client

    with Client("http://127.0.0.1:8765") as client:              # token="..." for a server started with one
        answer = client.search("a river between fields", top_k=20, bbox=(5, 45, 15, 55))
        best = answer["features"][0]["properties"]                # rank, score, tile_id, path, date, ...
        refined = client.search("a river", like=[best["tile_id"]])  # relevance feedback
        png = client.quicklook(best["tile_id"])                   # bytes of a PNG
        fields = client.tile(best["tile_id"])                     # footprint, date, cloud cover, ...
        scores = client.heatmap(best["tile_id"], q="a river")      # GeoTIFF bytes: where in it the river is

Searches answer GeoJSON FeatureCollections (`geopandas.GeoDataFrame.from_features(answer["features"])` makes
a table of one). An error answer raises MsearchApiError with the server's status and message.

A new endpoint is one method over `get` / `post`, which send the parameters a route declares and return its
JSON (see README.md, "API contract"):

    def places(self, **params) -> dict:
        return self.get("/api/places", **params)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8765"


class MsearchApiError(Exception):
    """The server answered an error: `status` (400, 401, 404, 409, 413, 414, 422) and its `message`."""

    def __init__(self, status: int, message: str, url: str):
        super().__init__(f"{status} from {url}: {message}")
        self.status = status
        self.message = message


class Client:
    """The API of one `msearch serve`, over one HTTP connection pool (close it, or use `with`)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def search(
        self,
        q: str | None = None,
        *,
        like: Iterable[int] = (),
        unlike: Iterable[int] = (),
        top_k: int = 10,
        offset: int = 0,
        lang: str | None = None,
        space: str | None = None,
        fuse: bool = False,
        route: str | None = None,
        bbox: Sequence[float] | str | None = None,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        max_cloud: float | None = None,
        tile_id: str | None = None,
        all_acquisitions: bool = False,
    ) -> dict:
        """A text search (GET /api/search), or with liked / unliked tile ids a relevance-feedback search
        (POST /api/search): a GeoJSON FeatureCollection, best first, one feature per place (`place_id`,
        `acquisitions`, `dates`), or per acquisition with `all_acquisitions`. `bbox` is (minlon, minlat, maxlon,
        maxlat) in WGS84; `tile_id` an MGRS tile; `route` (rgb, bridge, fuse) how a query beyond English is
        searched."""
        like, unlike = [int(t) for t in like], [int(t) for t in unlike]
        filters = {
            "top_k": top_k,
            "offset": offset,
            "lang": lang,
            "space": space,
            "bbox": bbox if bbox is None or isinstance(bbox, str) else ",".join(repr(float(v)) for v in bbox),
            "date_from": _date_text(date_from),
            "date_to": _date_text(date_to),
            "max_cloud": max_cloud,
            "tile_id": tile_id,
            "all_acquisitions": all_acquisitions or None,
        }
        if like or unlike:
            if fuse or route:
                raise ValueError("fuse and route apply to text searches, not to searches with examples")
            return self.post("/api/search", dict(filters, q=q, like=like, unlike=unlike))
        if not q:
            raise ValueError("give a query text, or liked tile ids to search by example")
        return self.get("/api/search", q=q, fuse=fuse or None, route=route, **filters)

    def tile(self, tile_id: int) -> dict:
        """A catalogued tile's fields (GET /api/tiles/{id}): file, root, footprint, date, cloud cover, ..."""
        return self.get(f"/api/tiles/{int(tile_id)}")

    def quicklook(self, tile_id: int) -> bytes:
        """The tile's true-colour quicklook, PNG bytes (GET /api/tiles/{id}/quicklook.png)."""
        return self._send("GET", f"/api/tiles/{int(tile_id)}/quicklook.png").content

    def place(self, place_id: int) -> dict:
        """A place and its acquisitions in date order (GET /api/places/{id})."""
        return self.get(f"/api/places/{int(place_id)}")

    def timeline(self, place_id: int, q: str | None = None, *, like: int | None = None, **params: Any) -> dict:
        """Every acquisition of a place in date order, scored for a text `q` or an example tile `like` (GET
        /api/places/{id}/timeline; `lang`, `space` as for search; `route`: rgb or bridge, for a text beyond
        English)."""
        return self.get(f"/api/places/{int(place_id)}/timeline", q=q, like=like, **params)

    def change(self, after: date | str, **params: Any) -> dict:
        """Places ranked by change between dates (GET /api/change): `before`, `to`, `from_text` (the API's
        `from`), `to_like`, `any`, `top_k`, `lang`, `space`, `route` (rgb or bridge), `bbox`, `max_cloud`, `tile_id`; a
        FeatureCollection."""
        if "from_text" in params:
            params["from"] = params.pop("from_text")
        if "before" in params:
            params["before"] = _date_text(params["before"])
        return self.get("/api/change", after=_date_text(after), **params)

    def heatmap(
        self,
        tile_id: int,
        q: str | None = None,
        like: int | None = None,
        lang: str | None = None,
        space: str | None = None,
        kind: str = "tif",
    ) -> bytes:
        """Where in the tile a text (q) or an example tile (like) matches: a float32 GeoTIFF of per-patch scores
        (kind "tif"), or the RGBA picture on the tile's pixel grid ("png"); GET /api/tiles/{id}/heatmap.KIND."""
        if kind not in ("tif", "png"):
            raise ValueError(f"kind is tif or png, got {kind!r}")
        query = {"q": q, "like": like, "lang": lang, "space": space}
        params = {name: _param_text(value) for name, value in query.items() if value is not None}
        return self._send("GET", f"/api/tiles/{int(tile_id)}/heatmap.{kind}", params=params).content

    def locate(self, tile_id: int, q: str | None = None, like: int | None = None, **params: Any) -> dict:
        """Outlines of the tile's best-scoring patches, a GeoJSON FeatureCollection in WGS84 (GET
        /api/tiles/{id}/locate; params: lang, space, threshold)."""
        return self.get(f"/api/tiles/{int(tile_id)}/locate", q=q, like=like, **params)

    def info(self) -> dict:
        """Spaces, counts, index kinds, languages and limits (GET /api/info)."""
        return self.get("/api/info")

    def schema(self) -> dict:
        """The server's OpenAPI schema (GET /api/openapi.json)."""
        return self.get("/api/openapi.json")

    def get(self, path: str, **params: Any) -> Any:
        """GET `path` with the parameters that are not None (booleans as true/false); its JSON."""
        query = {name: _param_text(value) for name, value in params.items() if value is not None}
        return self._send("GET", path, params=query).json()

    def post(self, path: str, body: dict) -> Any:
        """POST `body` as JSON, leaving out the fields that are None; its JSON."""
        return self._send("POST", path, json={name: value for name, value in body.items() if value is not None}).json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500] or response.reason_phrase
            raise MsearchApiError(response.status_code, message, f"{method} {path}")
        return response


def _date_text(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def _param_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
