"""Which language a text query is in, restricted to the ten languages msearch's text encoders cover.

English queries go to the multispectral English-only model's space, the other nine to RS-M-CLIP's
multilingual space, so detection only ever answers one of `SUPPORTED_LANGUAGES`. Queries are short
("flooded farmland", "침수된 농경지"), which is where general-purpose detectors are weakest, so it works in
two steps:

1. Script. Hangul is only Korean, Han only Chinese and Cyrillic only Russian among the ten, so if the text
   has any letters of these three scripts, the language is that of whichever of them has the most letters.
   A Latin acronym or place name inside such a query ("NDVI 高的农田") does not change that.
2. Latin script. The seven Latin-script languages are told apart by py3langid's naive Bayes model over
   byte n-grams (it ships inside its PyPI package, 4.5 MB), restricted to those seven. Its scores are
   log-likelihoods, so the difference between the best language and English says how many times more
   likely the text is under that language than under English.

Ambiguity resolves to English: a non-English language is chosen only when the text is at least
`NON_ENGLISH_MIN_LIKELIHOOD_RATIO` times more likely under it than under English. One-word and two-word
queries shared by several languages ("glacier", "delta", "open pit mine", "port") fall short of that and
stay English; text with no letters at all is English too.

A query written mostly in a script none of the ten languages uses (Arabic, Greek, Hebrew, Devanagari, Thai,
...), or with any Japanese kana (whose kanji would otherwise read as Chinese), is refused with
UnsupportedLanguageError rather than sent to a space that never learnt it: its embedding would be noise. A
Latin-script language beyond the seven (Norwegian, Polish, ...) cannot be told apart from them reliably in a
few words and is read as the nearest of the seven.
"""

from __future__ import annotations

import functools
import lzma
import math
import os
import unicodedata

from msearch.config import cache_dir

SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru")
LATIN_SCRIPT_LANGUAGES: tuple[str, ...] = ("en", "pt", "es", "fr", "de", "nl", "it")
AUTO = "auto"

# English is the default because it is the language of the multispectral model (the better one for
# English queries) and the language of most queries. A ratio of 100 keeps one- and two-word English queries
# that other languages also spell that way English, while a non-English query of two real words or more
# clears it by far.
NON_ENGLISH_MIN_LIKELIHOOD_RATIO = 100.0
_MIN_LOG_RATIO = math.log(NON_ENGLISH_MIN_LIKELIHOOD_RATIO)

LANGUAGE_NAMES = {
    "en": "English",
    "pt": "Portuguese",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "nl": "Dutch",
    "it": "Italian",
    "zh": "Chinese",
    "ko": "Korean",
    "ru": "Russian",
}

# The first word of a character's Unicode name says its script; these are the scripts that name a language.
_SCRIPT_LANGUAGE = {"HANGUL": "ko", "CJK": "zh", "CYRILLIC": "ru"}
# Scripts of no supported language, by the first word of their letters' Unicode names (after HALFWIDTH or
# FULLWIDTH). Kana marks Japanese even among kanji, since Chinese never uses it.
_KANA = ("HIRAGANA", "KATAKANA")
_UNSUPPORTED_SCRIPTS = {
    "HIRAGANA": "Japanese",
    "KATAKANA": "Japanese",
    "ARABIC": "Arabic",
    "GREEK": "Greek",
    "HEBREW": "Hebrew",
    "DEVANAGARI": "Devanagari",
    "BENGALI": "Bengali",
    "GURMUKHI": "Gurmukhi",
    "GUJARATI": "Gujarati",
    "TAMIL": "Tamil",
    "TELUGU": "Telugu",
    "KANNADA": "Kannada",
    "MALAYALAM": "Malayalam",
    "SINHALA": "Sinhala",
    "THAI": "Thai",
    "LAO": "Lao",
    "KHMER": "Khmer",
    "MYANMAR": "Myanmar",
    "TIBETAN": "Tibetan",
    "GEORGIAN": "Georgian",
    "ARMENIAN": "Armenian",
    "ETHIOPIC": "Ethiopic",
    "SYRIAC": "Syriac",
    "THAANA": "Thaana",
    "MONGOLIAN": "Mongolian",
}


class UnsupportedLanguageError(ValueError):
    """A query in a script none of the text encoders was trained on."""


def supported_languages_text() -> str:
    """'en (English), pt (Portuguese), ...' for messages."""
    return ", ".join(f"{code} ({LANGUAGE_NAMES[code]})" for code in SUPPORTED_LANGUAGES)


def detect_language(text: str) -> str:
    """The language of `text`, one of SUPPORTED_LANGUAGES; English when it is ambiguous or has no letters.
    Raises UnsupportedLanguageError for text in a script of none of them (see the module's notes)."""
    unsupported = unsupported_script(text)
    if unsupported is not None:
        raise UnsupportedLanguageError(
            f"the query {text!r} is written in {unsupported}, which none of the text encoders was trained on "
            f"(they know {supported_languages_text()}): rephrase it in one of these, or pass --lang CODE to "
            f"search with it anyway as that language"
        )
    script_language = _language_by_script(text)
    if script_language is not None:
        return script_language
    if not any(ch.isalpha() for ch in text):
        return "en"
    log_likelihood = dict(_latin_identifier().rank(text))
    best = max(log_likelihood, key=log_likelihood.get)
    if best != "en" and log_likelihood[best] - log_likelihood["en"] >= _MIN_LOG_RATIO:
        return best
    return "en"


def parse_language(code: str) -> str:
    """A user's `--lang` value, lower-cased: 'auto' or one of SUPPORTED_LANGUAGES. Raises ValueError otherwise."""
    normalised = code.strip().lower()
    if normalised == AUTO or normalised in SUPPORTED_LANGUAGES:
        return normalised
    raise ValueError(f"unsupported language {code!r}: use 'auto' or one of {', '.join(SUPPORTED_LANGUAGES)}")


def unsupported_script(text: str) -> str | None:
    """The name of the unsupported script `text` is written in: any kana (Japanese), else a script of no
    supported language that has more letters than the supported scripts together. None otherwise."""
    supported, unsupported = 0, {}
    for ch in text:
        if not ch.isalpha():
            continue
        script = _script(ch)
        if script.startswith(_KANA):
            return _UNSUPPORTED_SCRIPTS["HIRAGANA"]
        if script in _UNSUPPORTED_SCRIPTS:
            unsupported[script] = unsupported.get(script, 0) + 1
        elif script == "LATIN" or script in _SCRIPT_LANGUAGE:
            supported += 1
    if unsupported and sum(unsupported.values()) > supported:
        return _UNSUPPORTED_SCRIPTS[max(unsupported, key=unsupported.get)]
    return None


def _script(ch: str) -> str:
    words = unicodedata.name(ch, "").split(" ")
    return words[1] if words[0] in ("HALFWIDTH", "FULLWIDTH") and len(words) > 1 else words[0]


def _language_by_script(text: str) -> str | None:
    letters_per_language: dict[str, int] = {}
    for ch in text:
        if not ch.isalpha():
            continue
        language = _SCRIPT_LANGUAGE.get(_script(ch))
        if language is not None:
            letters_per_language[language] = letters_per_language.get(language, 0) + 1
    if not letters_per_language:
        return None
    return max(letters_per_language, key=letters_per_language.get)


@functools.cache
def _latin_identifier():
    # An identifier of our own, rather than py3langid's module-level one, so restricting its languages
    # affects nobody else. py3langid (and numpy) load here: checking a --lang or a script needs neither.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = _identifier_from_cache() or LanguageIdentifier.from_model_file(MODEL_FILE)
    identifier.set_languages(list(LATIN_SCRIPT_LANGUAGES))
    return identifier


def _identifier_from_cache():
    """py3langid's model, read from an uncompressed copy in msearch's cache. The package ships it
    LZMA-compressed, and decompressing takes 0.4 s of every cold query; the copy (68 MB) loads in 0.1 s.
    The model is read as py3langid's own loader reads it (modelio.load_model); None if that fails."""
    import numpy as np
    from py3langid import modelio
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    packaged = MODEL_DIR / MODEL_FILE
    try:
        copy = cache_dir() / "langid" / f"{packaged.name.removesuffix('.xz')}-{packaged.stat().st_size}"
        if not copy.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            scratch = copy.with_name(f".{copy.name}.{os.getpid()}")
            try:
                with lzma.open(packaged) as source, open(scratch, "wb") as target:
                    while chunk := source.read(1 << 20):
                        target.write(chunk)
                os.replace(scratch, copy)
            finally:
                scratch.unlink(missing_ok=True)
        with np.load(copy, allow_pickle=False) as data:
            return LanguageIdentifier(
                np.asarray(data["ptc"]),
                np.asarray(data["pc"]),
                data["classes"].tolist(),
                modelio._to_array(data["nextmove"]),
                data["out_feat"].tolist(),
                tk_row=modelio._to_array(data["nextmove_row"]),
            )
    except (OSError, ValueError, KeyError, AttributeError):
        return None
