"""Zero-shot classification of raster files, indexed or not: archive -> tiles -> pixels -> embeddings ->
per-class probabilities (softmax of logit_scale x cosine against the class vectors of the paper's prompts)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.tiles import ReadSettings
from msearch.models import load_encoder
from msearch.models.prompts import TEMPLATES, class_vectors, classify_probabilities


def classify_files(
    paths: Sequence[str | Path],
    classes: Sequence[str],
    model: str,
    checkpoint=None,
    templates: Sequence[str] = TEMPLATES,
    band_order=None,
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Zero-shot classification of raster files, indexed or not: (tile keys, probabilities, failures)."""
    if len(classes) < 2:
        raise ValueError("give at least two classes to choose between")
    encoder = load_encoder(model, checkpoint)
    settings = ReadSettings(band_order=band_order)
    found = discover([Path(p) for p in paths], settings)
    keys, pixels, failures = [], [], []
    for source in found.sources:
        try:
            pixels.append(read_tile(source, settings).pixels)
            keys.append(str(Path(source.root) / source.key))
        except Exception as exc:  # one unreadable tile is reported, the others are classified
            failures.append((source.key, str(exc)))
    if not pixels:
        return keys, np.empty((0, len(classes))), failures
    image_vectors = np.concatenate([encoder.encode_pixels(pixels[i : i + 32]) for i in range(0, len(pixels), 32)])
    return (
        keys,
        classify_probabilities(image_vectors, class_vectors(list(classes), encoder.encode_texts, templates)),
        failures,
    )
