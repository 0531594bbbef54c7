"""Loopback servers for remote reads: an HTTP server that honours range requests (Python's http.server does
not), serves files and JSON documents, answers a small STAC API `/search` with paging, counts what it sends
and fails on request; and moto's S3-compatible server. Both listen on 127.0.0.1 only, on a free port, and are
stopped by their handle. COGs for them are written from the shared sample data."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

MAJORTOM_L2A = ("majortom-core-s2l2a", "199U", "199U_1099R")
BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
EARTH_SEARCH_KEYS = {  # Earth Search v1 asset keys
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B11": "swir16",
    "B12": "swir22",
}


def write_cogs(shared_data: Path, dest: Path, size: int | None = 512, blocksize: int = 256) -> dict[str, Path]:
    """COGs (DEFLATE, `blocksize` px internal tiles) of the Major TOM scene's ten 10/20 m bands, cropped to
    `size` 10 m pixels (the 20 m bands to half) from the top left, or whole with size None."""
    import rasterio
    from rasterio.windows import Window

    folder = shared_data.joinpath(*MAJORTOM_L2A)
    product = next(p for p in folder.iterdir() if p.is_dir())
    dest.mkdir(parents=True, exist_ok=True)
    written = {}
    for band in BANDS_10M + BANDS_20M:
        with rasterio.open(product / f"{band}.tif") as src:
            side = (size if band in BANDS_10M else size // 2) if size else src.width
            window = Window(0, 0, side, side)
            profile = dict(src.profile, driver="COG", compress="DEFLATE", blocksize=blocksize, overviews="NONE")
            profile.update(width=side, height=side, transform=src.window_transform(window))
            for key in ("tiled", "blockxsize", "blockysize", "interleave"):
                profile.pop(key, None)
            with rasterio.open(dest / f"{band}.tif", "w", **profile) as out:
                out.write(src.read(window=window))
        written[band] = dest / f"{band}.tif"
    return written


def stac_item(item_id: str, hrefs: dict[str, str], shape: tuple[int, int] | None, **properties) -> dict:
    """An Earth Search-like sentinel-2-l2a item whose band assets are `hrefs` (band -> href)."""
    assets = {}
    for band, href in hrefs.items():
        asset = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
        if shape:
            factor = 1 if band in BANDS_10M else 2
            asset["proj:shape"] = [shape[0] // factor, shape[1] // factor]
        assets[EARTH_SEARCH_KEYS[band]] = asset
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [[[102, 15], [103, 15], [103, 16], [102, 16], [102, 15]]]},
        "bbox": [102, 15, 103, 16],
        "properties": {
            "datetime": "2020-01-15T03:40:00Z",
            "eo:cloud_cover": 5.0,
            "s2:processing_baseline": "02.12",
            "s2:mgrs_tile": "48QUD",
            **properties,
        },
        "links": [],
        "assets": assets,
    }


@dataclass
class Faults:
    """Requests the server answers badly: `once[path]` lists statuses for the next requests of a path (then it
    serves it); `always[path]` is a status every request of it gets; `stall[path]` seconds before answering."""

    once: dict[str, list[int]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)
    stall: dict[str, float] = field(default_factory=dict)


class RangeServer:
    """Files (path -> bytes) and JSON documents over HTTP/1.1 on 127.0.0.1, with `Range: bytes=` (206),
    ETags, HEAD, and a STAC API: `/` (landing page) and `/search` (GET or POST, paged by `next` tokens)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.items: list[dict] = []  # what /search returns, filtered by collection, bbox and cloud cover
        self.faults = Faults()
        self.bytes_sent: Counter = Counter()  # path -> body bytes sent
        self.requests: defaultdict = defaultdict(list)  # path -> [(method, Range header or None, status)]
        self.headers_seen: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> RangeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_file(self, path: str, data: bytes | Path) -> str:
        self.files[path] = data.read_bytes() if isinstance(data, Path) else data
        return f"{self.url}{path}"

    def add_json(self, path: str, document) -> str:
        return self.add_file(path, json.dumps(document).encode())

    def tif_bytes(self) -> int:
        return sum(n for path, n in self.bytes_sent.items() if path.endswith(".tif"))

    def reset_counts(self) -> None:
        with self._lock:
            self.bytes_sent.clear()
            self.requests.clear()

    # -- the STAC API -----------------------------------------------------------------------------------

    def _landing(self) -> dict:
        return {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "loopback",
            "description": "a STAC API on loopback",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/item-search#query",
            ],
            "links": [
                {"rel": "self", "href": f"{self.url}/", "type": "application/json"},
                {"rel": "root", "href": f"{self.url}/", "type": "application/json"},
                {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }

    def _search(self, params: dict) -> dict:
        collections = params.get("collections") or []
        if isinstance(collections, str):
            collections = collections.split(",")
        bbox = params.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        query = params.get("query") or {}
        if isinstance(query, str):
            query = json.loads(query)
        limit = int(params.get("limit") or 10)
        start = int(params.get("next") or 0)
        found = []
        for item in self.items:
            if collections and item.get("collection") not in collections:
                continue
            if bbox and not _overlaps(bbox, item["bbox"]):
                continue
            cloud = query.get("eo:cloud_cover", {})
            if "lte" in cloud and not item["properties"].get("eo:cloud_cover", 101) <= cloud["lte"]:
                continue
            found.append(item)
        page = found[start : start + limit]
        links = []
        if start + limit < len(found):
            body = {k: v for k, v in params.items() if k != "next"}
            links.append(
                {
                    "rel": "next",
                    "href": f"{self.url}/search",
                    "method": "POST",
                    "type": "application/geo+json",
                    "body": {**body, "next": str(start + limit)},
                }
            )
        return {"type": "FeatureCollection", "features": page, "links": links, "numberMatched": len(found)}

    # -- HTTP -------------------------------------------------------------------------------------------

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._answer(head=True)

            def do_GET(self):
                self._answer(head=False)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                params = json.loads(self.rfile.read(length) or b"{}")
                self._record(urlsplit(self.path).path, "POST", None, 200)
                self._send_json(server._search(params))

            def _record(self, path, method, range_header, status):
                with server._lock:
                    server.requests[path].append((method, range_header, status))
                    server.headers_seen.append(dict(self.headers))

            def _answer(self, head: bool):
                parts = urlsplit(self.path)
                path = parts.path
                range_header = self.headers.get("Range")
                if path in server.faults.stall:
                    time.sleep(server.faults.stall[path])
                status = server.faults.always.get(path)
                with server._lock:
                    pending = server.faults.once.get(path)
                    if status is None and pending:
                        status = pending.pop(0)
                if status is not None:
                    self._record(path, self.command, range_header, status)
                    return self._send(status, b"<Error>refused on purpose</Error>", "application/xml", head)
                if path in ("", "/"):
                    self._record(path, self.command, None, 200)
                    return self._send_json(server._landing(), head)
                if path == "/search":
                    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    self._record(path, self.command, None, 200)
                    return self._send_json(server._search(params), head)
                item_path = re.fullmatch(r"/collections/([^/]+)/items/([^/]+)", path)
                if item_path:  # an item's own endpoint
                    found = [i for i in server.items if (i.get("collection"), i["id"]) == item_path.groups()]
                    self._record(path, self.command, None, 200 if found else 404)
                    if found:
                        return self._send_json(found[0], head)
                    return self._send(404, b"not found", "text/plain", head)
                data = server.files.get(path)
                if data is None:
                    self._record(path, self.command, range_header, 404)
                    return self._send(404, b"not found", "text/plain", head)
                etag = '"' + hashlib.md5(data).hexdigest() + '"'
                match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header or "")
                if match and (match.group(1) or match.group(2)):
                    first, last = match.groups()
                    if first:
                        start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                    else:
                        start, end = max(0, len(data) - int(last)), len(data) - 1
                    if start >= len(data):
                        self._record(path, self.command, range_header, 416)
                        return self._send(416, b"", "text/plain", head, {"Content-Range": f"bytes */{len(data)}"})
                    self._record(path, self.command, range_header, 206)
                    extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "ETag": etag}
                    return self._send(206, data[start : end + 1], "image/tiff", head, extra, path)
                self._record(path, self.command, range_header, 200)
                kind = "application/json" if path.endswith(".json") else "image/tiff"
                return self._send(200, data, kind, head, {"ETag": etag}, path)

            def _send_json(self, document, head: bool = False):
                self._send(200, json.dumps(document).encode(), "application/geo+json", head)

            def _send(self, status, body, kind, head, extra=None, counted_path=None):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                    if counted_path:
                        with server._lock:
                            server.bytes_sent[counted_path] += len(body)

        return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that closes its connection early (GDAL stops reading once it has its bytes) is no error."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _overlaps(a, b) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


class S3Server:
    """moto's S3-compatible server (server mode, in a thread) on 127.0.0.1 and a free port, with the GDAL and
    AWS variables that point /vsis3/ at it (dummy keys: moto accepts any)."""

    def __init__(self, secret_key: str = "dummy-secret"):
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.secret_key = secret_key

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def endpoint(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"{host}:{port}"

    def environment(self) -> dict[str, str]:
        return {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_HTTPS": "NO",
            "AWS_ACCESS_KEY_ID": "dummy-key-id",
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        env = self.environment()
        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
