"""The paper's prompt templates, class names, class vectors and zero-shot class probabilities.

A class query is not one sentence: its vector is the mean of the L2-normalised embeddings of 50 template
sentences with the class name filled in, normalised again (Llama3-MS-CLIP's evaluation; the templates are
those of IBM's MS-CLIP repository, `classname_and_prompt/MSCLIP.py`, in the same order).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

PLACEHOLDER = "{c}"
# Shipped query set for the EuroSAT sample layout (`<Class>/<Class>_<n>.tif`): 2 queries per class in each of
# RS-M-CLIP's ten languages, relevant = every file of that class in the sample data's labels.csv. Evaluation
# reads it as a query set; indexing tunes its search indexes on its texts (`query_like_texts`).
EUROSAT_SAMPLE_QUERIES = Path(__file__).parent / "data" / "eurosat-queries.csv"

TEMPLATES: tuple[str, ...] = (
    "a satellite image showing {c}.",
    "a satellite image showing a {c}.",
    "a satellite image showing the {c}.",
    "The image is a satellite view showing {c}.",
    "The image is a satellite view showing a {c}.",
    "The image is a satellite view showing the {c}.",
    "The image shows {c}",
    "a satellite image of {c}.",
    "a satellite image of a {c}.",
    "a satellite image of the {c}.",
    "the satellite image of {c}.",
    "the satellite image of a {c}.",
    "the satellite image of the {c}.",
    "a satellite view of {c}.",
    "a satellite view of a {c}.",
    "a satellite view of the {c}.",
    "a low resolution satellite image of the {c}.",
    "a low resolution satellite image of a {c}.",
    "a bad satellite image of the {c}.",
    "a bad satellite image of a {c}.",
    "a cropped satellite image of the {c}.",
    "a cropped satellite image of a {c}.",
    "a bright satellite image of the {c}.",
    "a bright satellite image of a {c}.",
    "a cropped aerial image of the {c}.",
    "a cropped aerial image of a {c}.",
    "a bright aerial image of the {c}.",
    "a bright aerial image of a {c}.",
    "a dark aerial image of the {c}.",
    "a dark aerial image of a {c}.",
    "a close-up aerial image of the {c}.",
    "a close-up aerial image of a {c}.",
    "a black and white aerial image of the {c}.",
    "a black and white aerial image of a {c}.",
    "a jpeg corrupted aerial image of the {c}.",
    "a jpeg corrupted aerial image of a {c}.",
    "a blurry aerial image of the {c}.",
    "a blurry aerial image of a {c}.",
    "a good aerial image of the {c}.",
    "a good aerial image of a {c}.",
    "an aerial image of the large {c}.",
    "an aerial image of a large {c}.",
    "an aerial image of the nice {c}.",
    "an aerial image of a nice {c}.",
    "an aerial image of the small {c}.",
    "an aerial image of a small {c}.",
    "an aerial image of the weird {c}.",
    "an aerial image of a weird {c}.",
    "an aerial image of the cool {c}.",
    "an aerial image of a cool {c}.",
)

# The paper's logit scale for zero-shot classification: softmax(100 * cosine).
LOGIT_SCALE = 100.0

# A word boundary inside CamelCase: lower/digit then upper ("SeaLake"), or the end of an acronym ("RGBImage").
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def class_prompts(name: str, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """Every template with the class name filled in. `{c}` is replaced literally (not `str.format`), so a
    template may contain other braces."""
    return [template.replace(PLACEHOLDER, name) for template in templates]


def eurosat_class_name(folder: str, split_camel_case: bool = True) -> str:
    """The class string for a EuroSAT folder name: `AnnualCrop` -> "annual crop", `SeaLake` -> "sea lake".

    The paper's rule is "folder names lower-cased, `_` and `/` as spaces", and its code (IBM MS-CLIP,
    `benchmark_tool.py`) does exactly that to torchvision ImageFolder class names. EuroSAT's folders are
    CamelCase, so the literal rule yields "annualcrop", "herbaceousvegetation", "sealake", "permanentcrop":
    glued words a tokenizer splits into odd pieces. By default CamelCase is split into words first, which gives
    the words of the EuroSAT paper's class names ("Annual Crop", "Herbaceous Vegetation", "Permanent Crop");
    `split_camel_case=False` reproduces the paper's code character for character (use it to compare with the
    published numbers). CLIP's own EuroSAT prompts reword the names ("annual crop land", "lake or sea"): not
    used, as that is not the paper's rule.
    """
    name = _CAMEL_BOUNDARY.sub(" ", folder) if split_camel_case else folder
    name = name.replace("_", " ").replace("/", " ").lower()
    return " ".join(name.split())


def load_templates(path: str | Path) -> tuple[str, ...]:
    """Templates from a text file (`--templates FILE`): one per line, each containing `{c}`; blank lines are
    skipped, other whitespace is kept as written. A line without `{c}` or a repeated template is an error
    naming the file and line, since either would silently change the class vectors."""
    path = Path(path)
    templates: list[str] = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if PLACEHOLDER not in line:
            raise ValueError(f"{path}:{line_number}: template has no {PLACEHOLDER} placeholder: {line!r}")
        if line in seen:
            raise ValueError(f"{path}:{line_number}: template repeats line {seen[line]}: {line!r}")
        seen[line] = line_number
        templates.append(line)
    if not templates:
        raise ValueError(f"{path}: no templates")
    return tuple(templates)


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("cannot normalise a zero vector")
    return vectors / norms


def class_vectors(
    names: Sequence[str],
    encode_texts: Callable[[list[str]], np.ndarray],
    templates: Sequence[str] = TEMPLATES,
) -> np.ndarray:
    """(n_classes, d) class vectors: per class, the mean of its template embeddings, re-normalised.

    `encode_texts` maps n strings to an (n, d) array of L2-normalised embeddings (as `Encoder.encode_texts`).
    The embeddings are normalised again here, which changes nothing for a conforming encoder and keeps the
    rule right for one that returns raw embeddings. One call per class bounds the batch at len(templates)."""
    rows = []
    for name in names:
        embeddings = np.asarray(encode_texts(class_prompts(name, templates)), dtype=np.float64)
        if embeddings.shape[0] != len(templates) or embeddings.ndim != 2:
            raise ValueError(f"encode_texts returned shape {embeddings.shape} for {len(templates)} prompts")
        rows.append(_normalise_rows(embeddings).mean(axis=0))
    return _normalise_rows(np.stack(rows))


def classify_probabilities(
    image_vectors: np.ndarray, class_vectors: np.ndarray, logit_scale: float = LOGIT_SCALE
) -> np.ndarray:
    """(n_images, n_classes) zero-shot probabilities: softmax over classes of logit_scale * cosine similarity.

    Both inputs are L2-normalised here so the product is a cosine whatever the caller passes."""
    logits = logit_scale * (
        _normalise_rows(np.asarray(image_vectors, dtype=np.float64))
        @ _normalise_rows(np.asarray(class_vectors, dtype=np.float64)).T
    )
    # Subtracting the row maximum leaves the softmax unchanged and keeps exp() from overflowing.
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def query_like_texts(languages: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """Up to `n` texts like users' queries, to tune an approximate index with (deterministic): the shipped
    EuroSAT query set's queries in these languages and, for English, the templates filled with its classes."""
    with open(EUROSAT_SAMPLE_QUERIES, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [row["query"] for row in rows if row["lang"] in languages]
    if "en" in languages:
        classes = sorted({eurosat_class_name(row["relevant"].split("/")[0]) for row in rows})
        texts += [prompt for name in classes for prompt in class_prompts(name)]
    picked = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False)
    return [texts[i] for i in sorted(picked)]
