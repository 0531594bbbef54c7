"""Assets read where they live: `https://`, `s3://` and `gs://` hrefs opened in place through GDAL's virtual
file systems (rasterio maps them to /vsicurl/, /vsis3/, /vsigs/), by HTTP range requests.

Nothing is downloaded whole: a chip is a window at full resolution, so GDAL fetches the COG header and then
only the internal tiles (blocks) that the window touches; overviews are never read (they serve reduced
resolutions only). Credentials come only from the standard environment, read by GDAL or by rasterio's AWS
session (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws,
AWS_NO_SIGN_REQUEST=YES for public buckets, GOOGLE_APPLICATION_CREDENTIALS, GDAL's own options); msearch
never stores them, and URLs are shown without their query string (where presigned URLs carry signatures).
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

REMOTE_SCHEMES = ("http", "https", "s3", "gs")

# GDAL configuration for remote reads. Each is a default: the same name set in the environment wins.
GDAL_REMOTE_OPTIONS: dict[str, str] = {
    # Opening a file must not list its folder (one request, and object stores list slowly or not at all);
    # it also stops GDAL from probing for .aux.xml/.ovr/.msk side files.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # The COG header (IFDs and tile offsets) in the first request.
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    # Transient failures (HTTP 429, 500, 502, 503, 504, timeouts, reset connections) are retried by GDAL,
    # the delay doubling from 0.5 s at each retry.
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    # A window's blocks are fetched one range after another, into GDAL's per-process cache of remote ranges,
    # so that the next chips of the scene, which share blocks with it, find them there. The default (parallel
    # ranges) bypasses that cache: chip by chip, a scene was then fetched 4 times over (bench/read_throughput.py).
    "GDAL_HTTP_MULTIRANGE": "SERIAL",
    # That cache (default 16 MB) holds a row of chips' blocks of every band of a large scene.
    "CPL_VSIL_CURL_CACHE_SIZE": str(256 << 20),
}


def is_remote(href: str) -> bool:
    return urlsplit(str(href)).scheme.lower() in REMOTE_SCHEMES


def redact(url: str) -> str:
    """A URL as it may be shown or stored: without user:password and without its query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def gdal_options() -> dict[str, str]:
    return {name: value for name, value in GDAL_REMOTE_OPTIONS.items() if name not in os.environ}


@contextmanager
def remote_env():
    """GDAL's configuration for remote reads, for the duration of one tile's read. Yields the list GDAL's
    messages during the read are collected in (its retries name the URL and the HTTP status, which the
    exception raised after the last retry does not)."""
    import logging

    import rasterio

    messages: list[str] = []
    handler = _Collect(messages)
    logger = logging.getLogger("rasterio._err")  # where rasterio logs GDAL's warnings and errors
    logger.addHandler(handler)
    try:
        with rasterio.Env(**gdal_options()):
            yield messages
    finally:
        logger.removeHandler(handler)


class _Collect:
    """A logging handler that keeps the messages (logging.Handler's locking is not needed: one reader thread)."""

    level = 0

    def __init__(self, messages: list[str]):
        self.messages = messages

    def handle(self, record) -> None:
        self.messages.append(record.getMessage())


_REASONS = {
    401: "not authorised: credentials are missing or wrong (AWS_* variables, AWS_PROFILE, or AWS_NO_SIGN_REQUEST=YES)",
    403: "access denied: the credentials in the environment may not read it (AWS_* variables, AWS_PROFILE, "
    "or AWS_NO_SIGN_REQUEST=YES for a public bucket)",
    404: "not found",
    429: "too many requests, still refused after retries",
}


def failure_reason(exc: BaseException, urls: list[str], messages: list[str] = ()) -> str:
    """A clear reason for a remote read that failed after GDAL's retries: which asset, and the HTTP status
    (or a timeout). GDAL's retry messages name the URL; a failed open names neither the URL nor, on S3, the
    status (only S3's error text), so then each asset is opened again to find the one that fails."""
    text = " ".join(str(part) for part in (exc, exc.__cause__) if part)
    named = [m for m in messages if _status(m) or _timed_out(m)]
    url = next((u for m in named for u in urls if _names(m, u)), None) or next(
        (u for u in urls if _names(text, u)), None
    )
    if url is not None:
        text = " ".join([text, *(m for m in named if _names(m, url))])
    elif len(urls) == 1:
        url = urls[0]
    else:
        url, text = next(((u, why) for u in urls if (why := _open_failure(u))), (None, text))
    if url is not None and not (_status(text) or _timed_out(text)):
        text = " ".join([text, _probe_http(url)])  # GDAL may only say "does not exist" after a timeout
    what = f"remote asset {redact(url)}" if url else "remote assets " + ", ".join(redact(u) for u in urls)
    status = _status(text)
    if status:
        detail = _REASONS.get(status) or ("server error, still failing after retries" if status >= 500 else "")
        return f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
    if _timed_out(text):
        timeout = os.environ.get("GDAL_HTTP_TIMEOUT", GDAL_REMOTE_OPTIONS["GDAL_HTTP_TIMEOUT"])
        return f"{what}: timed out (no answer within GDAL_HTTP_TIMEOUT={timeout} s, after retries)"
    return f"{what}: {_redact_text(text, urls)}"


# What GDAL's /vsis3/ and /vsigs/ quote of an object store's error, by the HTTP status that carried it.
_STORE_ERRORS = {
    "The specified key does not exist": 404,
    "The specified bucket does not exist": 404,
    "No such object": 404,
    "Access Denied": 403,
    "AccessDenied": 403,
    "The AWS Access Key Id you provided does not exist": 403,
    "The request signature we calculated does not match": 403,
}


def _status(text: str) -> int | None:
    return _http_status(text) or next((code for words, code in _STORE_ERRORS.items() if words in text), None)


def _names(text: str, url: str) -> bool:
    return redact(url) in text or _vsi_name(url) in text


def _timed_out(text: str) -> bool:
    return "timed out" in text.lower() or "timeout was reached" in text.lower()


def _probe_http(url: str) -> str:
    """What one plain GET of an http(s) URL's first byte says, in GDAL's words: a status or a timeout."""
    import socket
    import urllib.error
    import urllib.request

    if urlsplit(url).scheme not in ("http", "https"):
        return ""
    timeout = float(os.environ.get("GDAL_HTTP_TIMEOUT", GDAL_REMOTE_OPTIONS["GDAL_HTTP_TIMEOUT"]))
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-0"}), timeout=timeout):
            return ""
    except urllib.error.HTTPError as exc:
        return f"HTTP response code: {exc.code}"
    except (TimeoutError, socket.timeout):
        return "timed out"
    except urllib.error.URLError as exc:
        return "timed out" if isinstance(exc.reason, (TimeoutError, socket.timeout)) else str(exc.reason)


def _open_failure(url: str) -> str | None:
    """Why opening `url` fails now, or None when it opens."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(url):
            return None
    except RasterioError as exc:
        return str(exc)


def _http_status(text: str) -> int | None:
    """GDAL says "HTTP response code: 403" (an open) or "HTTP error code: 500 - URL" (a retried read)."""
    match = re.search(r"HTTP (?:response|error) code(?: on \S+)?:\s*(\d{3})", text)
    return int(match.group(1)) if match else None


def _vsi_name(url: str) -> str:
    """The name GDAL gives a URL in its messages: s3://b/k is /vsis3/b/k, https://h/p is /vsicurl/https://h/p."""
    parts = urlsplit(url)
    if parts.scheme in ("s3", "gs"):
        return f"/vsi{parts.scheme}/{parts.netloc}{parts.path}"
    return f"/vsicurl/{url}"


def _redact_text(text: str, urls: list[str]) -> str:
    for url in urls:
        text = text.replace(url, redact(url))
    return re.sub(r"\?\S*", "", text)  # any other query string GDAL quotes


def identity(*parts: object) -> str:
    """What stands for the content of remote assets (which are never downloaded to be hashed)."""
    return hashlib.sha256("\n".join(str(p) for p in parts).encode()).hexdigest()


def asset_etags(urls: list[str]) -> str | None:
    """The ETags (else Last-Modified) of http(s) assets, from HEAD requests; None when any is unknown
    (s3:// and gs:// assets, or a server that sends neither)."""
    import urllib.request

    tags = []
    for url in urls:
        if urlsplit(url).scheme not in ("http", "https"):
            return None
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as response:
                tag = response.headers.get("ETag") or response.headers.get("Last-Modified")
        except OSError:
            return None
        if not tag:
            return None
        tags.append(tag)
    return "|".join(tags)
