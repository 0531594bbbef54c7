"""Zero-shot classification of raster files, indexed or not: archive -> tiles -> pixels -> embeddings ->
per-class probabilities (softmax of logit_scale x cosine against the class vectors of the paper's prompts)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.tiles import ReadSettings
from msearch.models.prompts import TEMPLATES, class_vectors, classify_probabilities

BATCH_SIZE = 32


def classify_files(
    paths: Sequence[str | Path],
    classes: Sequence[str],
    model: str,
    checkpoint=None,
    templates: Sequence[str] = TEMPLATES,
    band_order=None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Zero-shot classification of raster files, indexed or not: (tile keys, probabilities, failures).
    ValueError when there are fewer than two classes or no rasters under `paths` (checked before the model
    loads). `progress(done, total)` is called once the tiles are found, then after each batch."""
    if len(classes) < 2:
        raise ValueError("give at least two classes to choose between")
    settings = ReadSettings(band_order=band_order)
    found = discover([Path(p) for p in paths], settings)
    if not found.sources:
        raise ValueError(f"found no rasters to classify under {', '.join(str(p) for p in paths)}")
    if progress is not None:
        progress(0, len(found.sources))
    from msearch.models import load_encoder  # torch: only once there is something to classify

    encoder = load_encoder(model, checkpoint)
    text_vectors = class_vectors(list(classes), encoder.encode_texts, templates)
    keys, probabilities, failures = [], [], []
    sources = found.sources
    for start in range(0, len(sources), BATCH_SIZE):
        prepared = []
        for source in sources[start : start + BATCH_SIZE]:
            try:
                # Prepared one by one: a tile this encoder cannot take (an RGB file, for a multispectral
                # model) is a failure of that tile, not of the batch.
                prepared.append(encoder.prepare([read_tile(source, settings).pixels])[0])
                keys.append(str(Path(source.root) / source.key))
            except Exception as exc:  # one unreadable tile is reported, the others are classified
                failures.append((str(Path(source.root) / source.key), str(exc)))  # S2RGB/x.tif, not x.tif
        if prepared:
            import torch

            probabilities.append(classify_probabilities(encoder.encode_images(torch.stack(prepared)), text_vectors))
        if progress is not None:
            progress(min(start + BATCH_SIZE, len(sources)), len(sources))
    return keys, np.concatenate(probabilities) if probabilities else np.empty((0, len(classes))), failures
