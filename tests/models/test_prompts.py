"""Prompt templates, EuroSAT class names, class vectors and zero-shot probabilities."""

import zlib

import numpy as np
import pytest

from msearch.models.prompts import (
    TEMPLATES,
    class_prompts,
    class_vectors,
    classify_probabilities,
    eurosat_class_name,
    load_templates,
)

EUROSAT_FOLDERS = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)


def trigram_encoder(texts: list[str], dim: int = 64) -> np.ndarray:
    """A real, deterministic text embedding without a model: hashed character-trigram counts, L2-normalised."""
    vectors = np.zeros((len(texts), dim))
    for row, text in enumerate(texts):
        for start in range(len(text) - 2):
            vectors[row, zlib.crc32(text[start : start + 3].encode()) % dim] += 1.0
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_there_are_exactly_50_distinct_templates_with_one_placeholder():
    assert len(TEMPLATES) == 50
    assert len(set(TEMPLATES)) == 50
    assert all(template.count("{c}") == 1 for template in TEMPLATES)


def test_template_spot_checks_against_models_md():
    assert TEMPLATES[0] == "a satellite image showing {c}."
    assert "The image is a satellite view showing the {c}." in TEMPLATES
    assert "The image shows {c}" in TEMPLATES  # the one without a final period
    assert "The image shows {c}." not in TEMPLATES
    assert "the satellite image of a {c}." in TEMPLATES
    assert "a low resolution satellite image of the {c}." in TEMPLATES
    assert "a jpeg corrupted aerial image of a {c}." in TEMPLATES
    assert "a black and white aerial image of the {c}." in TEMPLATES
    assert "a close-up aerial image of a {c}." in TEMPLATES
    assert "an aerial image of a weird {c}." in TEMPLATES
    assert TEMPLATES[-1] == "an aerial image of a cool {c}."
    # The family sizes MODELS.md gives: 6 + 1 + 9 + 8 + 16 + 10.
    assert sum("showing" in t for t in TEMPLATES) == 6
    assert sum(" satellite image of " in t or " satellite view of " in t for t in TEMPLATES) == 9 + 8
    assert sum(t.endswith(("aerial image of the {c}.", "aerial image of a {c}.")) for t in TEMPLATES) == 16
    assert sum(t.startswith("an aerial image of ") for t in TEMPLATES) == 10


def test_class_prompts_fill_the_name():
    prompts = class_prompts("sea lake")
    assert len(prompts) == 50
    assert prompts[0] == "a satellite image showing sea lake."
    assert "The image shows sea lake" in prompts
    assert class_prompts("river", ["{c} in {braces}"]) == ["river in {braces}"]


def test_eurosat_class_names():
    names = [eurosat_class_name(folder) for folder in EUROSAT_FOLDERS]
    assert names == [
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
    ]
    # The paper's code, literally: lower-case, `_` and `/` as spaces, CamelCase left glued.
    assert eurosat_class_name("AnnualCrop", split_camel_case=False) == "annualcrop"
    assert eurosat_class_name("SeaLake", split_camel_case=False) == "sealake"
    assert eurosat_class_name("Sea_Lake/shore") == "sea lake shore"
    assert eurosat_class_name("RGBImage") == "rgb image"


def test_load_templates(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of {c}.\n\n  the {c} from above\n", encoding="utf-8")
    assert load_templates(path) == ("a photo of {c}.", "  the {c} from above")

    path.write_text("a photo of {c}.\na photo of a river\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"templates.txt:2: template has no \{c\}"):
        load_templates(path)
    path.write_text("a {c}\nthe {c}\na {c}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="templates.txt:3: template repeats line 1"):
        load_templates(path)
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no templates"):
        load_templates(path)


def test_load_templates_round_trips_the_paper_templates(tmp_path):
    path = tmp_path / "paper.txt"
    path.write_text("\n".join(TEMPLATES) + "\n", encoding="utf-8")
    assert load_templates(path) == TEMPLATES


def test_class_vectors_are_renormalised_template_means():
    names = ["river", "sea lake", "forest"]
    vectors = class_vectors(names, trigram_encoder)
    assert vectors.shape == (3, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    for name, vector in zip(names, vectors):
        mean = trigram_encoder(class_prompts(name)).mean(axis=0)
        assert np.allclose(vector, mean / np.linalg.norm(mean))
    # An encoder that returns raw (unnormalised) embeddings gives the same class vectors.
    scaled = class_vectors(names, lambda texts: 3.0 * trigram_encoder(texts))
    assert np.allclose(scaled, vectors)


def test_class_vectors_refuse_a_wrong_shape():
    with pytest.raises(ValueError, match="for 50 prompts"):
        class_vectors(["river"], lambda texts: trigram_encoder(texts)[:3])


def test_classify_probabilities_is_softmax_of_100_cosine():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 64))
    classes = class_vectors([eurosat_class_name(folder) for folder in EUROSAT_FOLDERS], trigram_encoder)
    probabilities = classify_probabilities(images, classes)

    assert probabilities.shape == (6, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    cosine = (images / np.linalg.norm(images, axis=1, keepdims=True)) @ classes.T
    direct = np.exp(100 * cosine) / np.exp(100 * cosine).sum(axis=1, keepdims=True)
    assert np.allclose(probabilities, direct)
    # Cosine does not depend on vector length.
    assert np.allclose(classify_probabilities(5 * images, classes), probabilities)
