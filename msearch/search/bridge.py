"""`msearch align`: fit a text bridge from a multilingual space (RS-M-CLIP) into the multispectral one
(Llama3-MS-CLIP), so that queries in the nine languages beyond English can search all ten bands.

The fit: a corpus of English remote-sensing texts is encoded by both text towers, X (from) and Y (to), and a
linear map W with X W ~ Y is fitted two ways:
- ridge least squares, W = (X'X + lambda I)^-1 X'Y, lambda chosen on a validation split;
- orthogonal Procrustes, W = U V' from the SVD of X'Y (a rotation: it keeps the geometry of the source space).
Both are judged by the mean cosine between mapped and true target embeddings of held-out texts: whole classes
are held out, so the number says how the map carries texts about things it never saw. The better method is
refitted on the whole corpus and stored. RS-M-CLIP was trained so that translations land close together,
which is what lets an English-fitted map carry other languages; the translations in the shipped query set
measure how far that holds (mapped translation vs the target embedding of the English original).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msearch.models.prompts import EUROSAT_SAMPLE_QUERIES, TEMPLATES, class_prompts, eurosat_class_name
from msearch.search.searcher import QueryError, Searcher
from msearch.store.bridges import Bridge, identity_of, save_bridge

RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
HELD_OUT_EVERY = 5  # every fifth class (and its texts) is held out of the fit that measures quality
ENCODE_BATCH = 256

# Class names of the benchmarks the paper and users evaluate on, as the paper writes class strings.
EUROSAT_CLASSES = (
    "annual crop",
    "forest",
    "herbaceous vegetation",
    "highway",
    "industrial",
    "pasture",
    "permanent crop",
    "residential",
    "river",
    "sea lake",
)
BIGEARTHNET_19_CLASSES = (
    "urban fabric",
    "industrial or commercial units",
    "arable land",
    "permanent crops",
    "pastures",
    "complex cultivation patterns",
    "land principally occupied by agriculture, with significant areas of natural vegetation",
    "agro-forestry areas",
    "broad-leaved forest",
    "coniferous forest",
    "mixed forest",
    "natural grassland and sparsely vegetated areas",
    "moors, heathland and sclerophyllous vegetation",
    "transitional woodland, shrub",
    "beaches, dunes, sands",
    "inland wetlands",
    "coastal wetlands",
    "inland waters",
    "marine waters",
)
BIGEARTHNET_43_CLASSES = (
    "continuous urban fabric",
    "discontinuous urban fabric",
    "industrial or commercial units",
    "road and rail networks and associated land",
    "port areas",
    "airports",
    "mineral extraction sites",
    "dump sites",
    "construction sites",
    "green urban areas",
    "sport and leisure facilities",
    "non-irrigated arable land",
    "permanently irrigated land",
    "rice fields",
    "vineyards",
    "fruit trees and berry plantations",
    "olive groves",
    "pastures",
    "annual crops associated with permanent crops",
    "complex cultivation patterns",
    "land principally occupied by agriculture, with significant areas of natural vegetation",
    "agro-forestry areas",
    "broad-leaved forest",
    "coniferous forest",
    "mixed forest",
    "natural grassland",
    "moors and heathland",
    "sclerophyllous vegetation",
    "transitional woodland shrub",
    "beaches, dunes, sands",
    "bare rock",
    "sparsely vegetated areas",
    "burnt areas",
    "inland marshes",
    "peatbogs",
    "salt marshes",
    "salines",
    "intertidal flats",
    "water courses",
    "water bodies",
    "coastal lagoons",
    "estuaries",
    "sea and ocean",
)
METER_ML_CLASSES = (
    "concentrated animal feeding operations",
    "landfills",
    "coal mines",
    "oil and gas processing plants",
    "oil refineries and petroleum terminals",
    "wastewater treatment plants",
)
# The land-cover classes of the sample data's per-pixel maps (terramesh-examples/LULC).
LULC_CLASSES = (
    "water",
    "trees",
    "flooded vegetation",
    "crops",
    "built area",
    "bare ground",
    "snow and ice",
    "clouds",
    "rangeland",
)
CLASS_SETS = (EUROSAT_CLASSES, BIGEARTHNET_19_CLASSES, BIGEARTHNET_43_CLASSES, METER_ML_CLASSES, LULC_CLASSES)


@dataclass
class CorpusText:
    text: str
    group: str  # the class a template text was filled with, or the query itself: held out together


@dataclass
class FitReport:
    bridge: Bridge
    corpus_size: int
    held_out_texts: int
    ridge_cosine: float  # mean held-out cosine, ridge at its chosen lambda
    ridge_lambda: float
    procrustes_cosine: float
    translations: dict[str, float]  # language -> mean cosine of mapped translations to the English target


def default_corpus() -> list[CorpusText]:
    """The paper's 50 templates over the class names of EuroSAT, BigEarthNet-19/43, METER-ML and the sample
    data's land-cover classes, plus the English queries of the shipped query set (several thousand texts)."""
    corpus, seen = [], set()
    for name in dict.fromkeys(name for names in CLASS_SETS for name in names):
        for text in class_prompts(name, TEMPLATES):
            if text not in seen:
                seen.add(text)
                corpus.append(CorpusText(text, name))
    for query, lang, _ in _shipped_queries():
        if lang == "en" and query not in seen:
            seen.add(query)
            corpus.append(CorpusText(query, query))
    return corpus


def corpus_from_file(path: Path) -> list[CorpusText]:
    """One English text per line; each text is its own group."""
    if not path.is_file():
        raise QueryError(f"--texts {path}: no such file (give a text file with one English text per line)")
    texts = list(dict.fromkeys(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()))
    if len(texts) < 2 * HELD_OUT_EVERY:
        raise QueryError(f"--texts {path}: {len(texts)} texts are too few to fit and check a map (give hundreds)")
    return [CorpusText(text, text) for text in texts]


def _shipped_queries() -> list[tuple[str, str, str]]:
    with open(EUROSAT_SAMPLE_QUERIES, newline="", encoding="utf-8") as handle:
        return [(row["query"], row["lang"], row["relevant"]) for row in csv.DictReader(handle)]


def translation_pairs() -> dict[str, list[tuple[str, str]]]:
    """Per language, (translated query, English original) from the shipped query set, whose queries come in
    the same order per class in every language."""
    by_class: dict[tuple[str, str], list[str]] = defaultdict(list)
    for query, lang, relevant in _shipped_queries():
        by_class[(lang, eurosat_class_name(relevant.split("/")[0]))].append(query)
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (lang, name), queries in by_class.items():
        english = by_class.get(("en", name), [])
        if lang != "en":
            pairs[lang].extend(zip(queries, english))
    return dict(pairs)


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def fit_ridge(x: np.ndarray, y: np.ndarray, ridge_lambda: float) -> np.ndarray:
    x, y = x.astype(np.float64), y.astype(np.float64)
    return np.linalg.solve(x.T @ x + ridge_lambda * np.eye(x.shape[1]), x.T @ y)


def fit_procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The (semi-)orthogonal W minimising |XW - Y| (different dimensions: a partial isometry)."""
    u, _, vt = np.linalg.svd(x.astype(np.float64).T @ y.astype(np.float64), full_matrices=False)
    return u @ vt


def mean_cosine(x: np.ndarray, matrix: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sum(_normalise(x @ matrix) * _normalise(y), axis=1)))


def fit_map(x: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> tuple[str, np.ndarray, dict]:
    """Choose between ridge (lambda on a validation split) and Procrustes by held-out cosine, then refit the
    choice on everything. Returns (method, matrix, quality)."""
    order = list(dict.fromkeys(groups))
    held = {g for i, g in enumerate(order) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1}
    test = np.array([g in held for g in groups])
    # The lambda is chosen on a validation split inside the training part, never on the held-out classes.
    train_groups = [g for g in order if g not in held]
    val = {g for i, g in enumerate(train_groups) if i % HELD_OUT_EVERY == 0}
    in_val = np.array([g in val for g in groups]) & ~test
    fit_part = ~test & ~in_val
    ridge_lambda = max(
        RIDGE_LAMBDAS, key=lambda lam: mean_cosine(x[in_val], fit_ridge(x[fit_part], y[fit_part], lam), y[in_val])
    )
    ridge_cos = mean_cosine(x[test], fit_ridge(x[~test], y[~test], ridge_lambda), y[test])
    procrustes_cos = mean_cosine(x[test], fit_procrustes(x[~test], y[~test]), y[test])
    quality = {
        "held_out_texts": int(test.sum()),
        "ridge_cosine": ridge_cos,
        "ridge_lambda": ridge_lambda,
        "procrustes_cosine": procrustes_cos,
        "corpus_size": len(groups),
    }
    if ridge_cos >= procrustes_cos:
        return "ridge", fit_ridge(x, y, ridge_lambda).astype(np.float32), quality
    return "procrustes", fit_procrustes(x, y).astype(np.float32), quality


def _encode(encode_texts: Callable, texts: Sequence[str], progress: Callable[[int], None] | None) -> np.ndarray:
    chunks = []
    for start in range(0, len(texts), ENCODE_BATCH):
        chunks.append(np.asarray(encode_texts(list(texts[start : start + ENCODE_BATCH])), dtype=np.float32))
        if progress:
            progress(len(chunks[-1]))
    return np.concatenate(chunks)


def default_bridge_spaces(searcher: Searcher) -> tuple[str, str]:
    """From: the space that speaks the most languages; to: the multispectral space."""
    spaces = searcher.spaces()
    multispectral = [n for n, c in spaces.items() if c.family == "ms-clip"]
    others = sorted((n for n in spaces if n not in multispectral), key=lambda n: -len(spaces[n].languages))
    if not multispectral or not others:
        raise QueryError(
            f"a bridge joins a multilingual space to a multispectral one; this index has "
            f"{', '.join(spaces) or 'no spaces'}: index with both (the default models) first"
        )
    return others[0], multispectral[0]


def align(
    searcher: Searcher,
    from_space: str | None = None,
    to_space: str | None = None,
    corpus: list[CorpusText] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FitReport:
    """Fit, check and store the bridge from one space's text embeddings to another's."""
    default_from, default_to = (None, None) if from_space and to_space else default_bridge_spaces(searcher)
    from_space, to_space = from_space or default_from, to_space or default_to
    spaces = searcher.spaces()
    for space in (from_space, to_space):
        if space not in spaces:
            raise QueryError(f"no space {space!r} in this index (it has: {', '.join(spaces)})")
    if from_space == to_space:
        raise QueryError("--from and --to name the same space")
    if "en" not in spaces[to_space].languages or "en" not in spaces[from_space].languages:
        raise QueryError("both spaces must understand English: the map is fitted on English texts")
    corpus = corpus or default_corpus()
    texts = [item.text for item in corpus]
    pairs = translation_pairs()
    total = 2 * len(texts) + sum(2 * len(p) for p in pairs.values())
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    from_encode = searcher.text_encoder(from_space).encode_texts
    to_encode = searcher.text_encoder(to_space).encode_texts
    x, y = _encode(from_encode, texts, step), _encode(to_encode, texts, step)
    method, matrix, quality = fit_map(x, y, [item.group for item in corpus])
    translations = {}
    for lang, lang_pairs in sorted(pairs.items()):
        if lang not in spaces[from_space].languages:
            continue
        mapped = _encode(from_encode, [p[0] for p in lang_pairs], step)
        target = _encode(to_encode, [p[1] for p in lang_pairs], step)
        translations[lang] = mean_cosine(mapped, matrix, target)
    quality["translations"] = translations
    manifests = searcher.store.manifests()
    bridge = Bridge(
        from_space,
        to_space,
        identity_of(manifests[from_space]),
        identity_of(manifests[to_space]),
        method,
        matrix,
        quality["ridge_lambda"] if method == "ridge" else None,
        quality,
    )
    save_bridge(searcher.store.directory, bridge)
    return FitReport(
        bridge,
        len(texts),
        quality["held_out_texts"],
        quality["ridge_cosine"],
        quality["ridge_lambda"],
        quality["procrustes_cosine"],
        translations,
    )
