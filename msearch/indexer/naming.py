"""What Sentinel-2 file and product names tell: level, acquisition time, processing baseline, MGRS tile.

Product names follow MMM_MSIXXX_YYYYMMDDTHHMMSS_Nxxyy_ROOO_Txxxxx_<discriminator>; archives keep parts of
them in folder and file names (BigEarthNet: S2A_MSIL2A_20170613T101031_87_48; SSL4EO-S12:
20200813T054639_20200813T054952_T43RCP)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from msearch.schema.bands import carries_offset, parse_processing_baseline

_PRODUCT_RE = re.compile(r"S2[ABCD]_MSI(L1C|L2A)_\d{8}T\d{6}(?:_N\d{4}_R\d{3}_T\d{2}[A-Z]{3}_\d{8}T\d{6})?")
_LEVEL_RE = re.compile(r"MSI(L1C|L2A)|(?:^|[_/])(L1C|L2A)(?:[_/.]|$)")
_TIME_RE = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?!\d)")
_TILE_RE = re.compile(r"(?:^|[_/])T(\d{2}[C-X][A-Z]{2})(?:[_/.]|$)")
_BASELINE_RE = re.compile(r"_N(\d{4})_")


@dataclass(frozen=True)
class NameFacts:
    product: str | None = None
    level: str | None = None
    acquired: datetime | None = None
    processing_baseline: str | None = None  # "04.00"
    mgrs_tile: str | None = None

    def carries_offset(self) -> bool | None:
        baseline = parse_processing_baseline(self.processing_baseline) if self.processing_baseline else None
        acquired: date | None = self.acquired.date() if self.acquired else None
        return carries_offset(self.level, baseline, acquired)


def facts_from_name(text: str) -> NameFacts:
    """Facts found in a path or product name; the first acquisition time in the text is taken."""
    product = _PRODUCT_RE.search(text)
    level = _LEVEL_RE.search(text)
    when = _TIME_RE.search(text)
    tile = _TILE_RE.search(text)
    baseline = _BASELINE_RE.search(text)
    acquired = None
    if when:
        try:
            acquired = datetime(*(int(g) for g in when.groups()))
        except ValueError:
            acquired = None
    return NameFacts(
        product=product.group(0) if product else None,
        level=(level.group(1) or level.group(2)) if level else None,
        acquired=acquired,
        processing_baseline=f"{baseline.group(1)[:2]}.{baseline.group(1)[2:]}" if baseline else None,
        mgrs_tile=tile.group(1) if tile else None,
    )
