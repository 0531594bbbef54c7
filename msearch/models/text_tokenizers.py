"""The two families' tokenizers without torch: token ids exactly as open_clip's tokenizers produce them.

open_clip's `SimpleTokenizer` and `HFTokenizer` return torch tensors, and importing open_clip imports torch,
torchvision and transformers (5 s on a 2-core machine): more than a whole query may take. These give the
same ids as lists of ints, from files a text-tower export carries (msearch.models.numpy_text):

- `ClipBpeTokenizer`: CLIP's byte-level BPE, ported from open_clip's `SimpleTokenizer` (itself OpenAI CLIP's,
  MIT licence), from its merges file `bpe_simple_vocab_16e6.txt.gz`.
- `JsonTokenizer`: a Hugging Face fast tokenizer's `tokenizer.json` (XLM-R's), through the `tokenizers`
  library that transformers itself runs, with open_clip's cleaning and its truncation to the context length.

tests/models/test_numpy_text.py checks both against open_clip's on many strings.
"""

from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path

# open_clip's clean functions, by the name a text config gives them (`tokenizer_kwargs: {"clean": ...}`);
# open_clip's defaults are "lower" for CLIP's BPE and "whitespace" for Hugging Face tokenizers.
CLEAN_KINDS = ("lower", "whitespace")
CLIP_BPE_MERGES = 49152 - 256 - 2  # open_clip reads this many merges from the file
CLIP_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")


def clean_text(text: str, kind: str) -> str:
    """open_clip's `_clean_lower` / `_clean_whitespace`: ftfy, HTML entities twice, whitespace runs to one."""
    import ftfy  # 0.1 s; only a text that is tokenized needs it

    text = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())  # split() drops edge whitespace
    return text.lower() if kind == "lower" else text


def check_clean_kind(kind: str) -> str:
    if kind not in CLEAN_KINDS:
        raise ValueError(f"text cleaning {kind!r} is not supported without torch (supported: {', '.join(CLEAN_KINDS)})")
    return kind


class ClipBpeTokenizer:
    """open_clip's SimpleTokenizer: <start_of_text> BPE tokens <end_of_text>, cut to the context length
    with <end_of_text> kept last."""

    def __init__(self, merges_file: str | Path, context_length: int = 77, clean: str = "lower"):
        import regex

        self.context_length = context_length
        self.clean = check_clean_kind(clean)
        with gzip.open(merges_file) as handle:
            lines = handle.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : CLIP_BPE_MERGES + 1]]
        self.byte_encoder = _bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(merge) for merge in merges] + list(CLIP_SPECIAL_TOKENS)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.sot, self.eot = (self.encoder[t] for t in CLIP_SPECIAL_TOKENS)
        self.cache = {t: t for t in CLIP_SPECIAL_TOKENS}
        self.pattern = regex.compile(
            "|".join(CLIP_SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned text, without start and end tokens."""
        ids = []
        for token in self.pattern.findall(clean_text(text, self.clean)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(token).split(" "))
        return ids

    def __call__(self, texts: list[str]) -> list[list[int]]:
        rows = []
        for text in texts:
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            rows.append(ids)
        return rows

    def truncates(self, text: str) -> bool:
        return len(self.encode(text)) + 2 > self.context_length

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        while pairs:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            pairs = _pairs(word) if len(word) > 1 else set()
        self.cache[token] = " ".join(word)
        return self.cache[token]


class JsonTokenizer:
    """A Hugging Face `tokenizer.json` called as open_clip's HFTokenizer calls it: cleaned text, special
    tokens added, truncated to the context length (special tokens included)."""

    def __init__(self, tokenizer_file: str | Path, context_length: int = 77, clean: str = "whitespace"):
        from tokenizers import Tokenizer

        self.context_length = context_length
        self.clean = check_clean_kind(clean)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._encode([clean_text(t, self.clean) for t in texts], truncate=True)]

    def truncates(self, text: str) -> bool:
        return len(self._encode([clean_text(text, self.clean)], truncate=False)[0].ids) > self.context_length

    def _encode(self, texts: list[str], truncate: bool):
        if truncate:
            self.tokenizer.enable_truncation(self.context_length)
        else:
            self.tokenizer.no_truncation()
        return self.tokenizer.encode_batch(texts)


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from bytes to printable characters (whitespace and control bytes moved up)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    moved = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + moved)
            moved += 1
    return dict(zip(printable, map(chr, chars)))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word, word[1:]))
