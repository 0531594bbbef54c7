"""True-colour quicklooks of result tiles, and the one-file HTML page that shows them.

Stretch: Sentinel-2 reflectances of most land sit in the bottom tenth of the 0-10000 range, and a fixed
scale makes tiles either dark or (snow, cloud) burnt out. Each quicklook is therefore stretched on its own:
the 2nd and 98th percentiles of B04, B03 and B02 taken together (one pair for all three bands, so colours
keep their balance) map to 0 and 255, and values beyond are clipped. Nodata pixels (stored value 0, the
Sentinel-2 no-data value, or NaN) are left out of the percentiles and drawn black.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

from msearch.schema.pixels import Pixels
from msearch.search.results import SearchResult

TRUE_COLOUR_BANDS = ("B04", "B03", "B02")
STRETCH_PERCENTILES = (2.0, 98.0)


def true_colour(pixels: Pixels) -> np.ndarray:
    """(height, width, 3) uint8 RGB from B04, B03, B02, stretched as the module docstring says."""
    rgb = pixels.select(TRUE_COLOUR_BANDS)
    # select() took the offset off, so the stored no-data value 0 now reads as -offset.
    valid = np.all(np.isfinite(rgb) & (rgb != -np.float32(pixels.offset)), axis=0)
    if not valid.any():
        raise ValueError("the tile has no valid pixels in B04, B03 and B02")
    low, high = np.percentile(rgb[:, valid], STRETCH_PERCENTILES)
    # A flat image (high == low) would divide by zero; any positive span draws it uniformly dark.
    scaled = (rgb - low) / max(high - low, 1e-6) * 255.0
    image = np.where(valid, np.clip(scaled, 0.0, 255.0), 0.0)
    return np.rint(image).astype(np.uint8).transpose(1, 2, 0)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an (height, width, 3) uint8 image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (height, width, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def html_page(results: list[SearchResult], images: list[bytes | None], query_info: dict) -> str:
    """One self-contained HTML page: each result's quicklook (a PNG embedded as a data URI; None where none
    could be made, shown as a placeholder) with its rank, score, place, date, tile and file path.

    `query_info` holds "query", "lang" and "space" as for the other formats."""
    if len(images) != len(results):
        raise ValueError(f"{len(results)} results but {len(images)} quicklooks")
    title = f"msearch: {query_info['query']}"
    cards = "\n".join(_card(result, image) for result, image in zip(results, images))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }}
.results {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.result {{ width: 240px; background: #fff; border: 1px solid #ddd; padding: 8px; }}
.result img, .no-quicklook {{ width: 224px; height: 224px; display: block; }}
/* Tiles can be small (64 px EuroSAT chips): scaled-up pixels stay sharp. */
.result img {{ image-rendering: pixelated; }}
.no-quicklook {{ background: #eee; color: #666; display: flex; align-items: center; justify-content: center;
  text-align: center; }}
.result dl {{ display: grid; grid-template-columns: auto 1fr; gap: 2px 8px; font-size: 0.85em; margin: 6px 0 0; }}
.result dt {{ color: #777; }}
.result dd {{ margin: 0; overflow-wrap: anywhere; }}
</style>
</head>
<body>
<h1>{html.escape(str(query_info["query"]))}</h1>
<p>language: {html.escape(str(query_info["lang"]))} &middot; space: {html.escape(str(query_info["space"]))}
&middot; {len(results)} result{"" if len(results) == 1 else "s"}</p>
<div class="results">
{cards}
</div>
</body>
</html>
"""


def _card(result: SearchResult, image: bytes | None) -> str:
    if image is None:
        picture = '<div class="no-quicklook">no quicklook<br>(tile unreadable or empty)</div>'
    else:
        data = base64.b64encode(image).decode("ascii")
        picture = f'<img src="data:image/png;base64,{data}" alt="{html.escape(result.path)}">'
    place = f"{result.lat:.4f}, {result.lon:.4f}" if result.lat is not None else "unknown"
    tile = f"{result.tile} (id {result.tile_id})" if result.tile else f"id {result.tile_id}"
    fields = [
        ("rank", str(result.rank)),
        ("score", f"{result.score:.3f}"),
        ("lat, lon", place),
        ("date", result.date or "unknown"),
        ("tile", tile),
        ("file", result.path),
        ("under", result.root),
    ]
    if result.acquisitions is not None:  # a place: its passing acquisitions' dates, best first
        shown = ", ".join((date or "undated")[:10] for date in result.dates or [])
        more = (
            f" (+{result.acquisitions - len(result.dates)} more)"
            if result.acquisitions > len(result.dates or [])
            else ""
        )
        fields.append(("place", f"{result.place_id} ({result.acquisitions} acquisitions)"))
        fields.append(("dates", shown + more))
    rows = "".join(f"<dt>{name}</dt><dd>{html.escape(value)}</dd>" for name, value in fields)
    return f'<div class="result">{picture}<dl>{rows}</dl></div>'
