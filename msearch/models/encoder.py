"""The one interface the rest of msearch uses to turn tiles and texts into vectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from msearch.models.card import EncoderIdentity, ModelCard, get_card
from msearch.models.device import parse_precision, resolve_device, resolve_precision
from msearch.models.hub import weights_digest
from msearch.models.loading import LoadedModel, load_model, load_text_model
from msearch.models.recipe import prepare, prepare_stored
from msearch.schema.pixels import NativeBands, Pixels


class TextEncoder:
    """Texts -> (n, d) float32, L2-normalised: what a query needs, and all that `load_text_encoder` builds."""

    def __init__(self, card: ModelCard, loaded: LoadedModel, encode_tokens=None):
        self.card = card
        self.model = loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self.weights_path = loaded.weights_path
        self.identity = EncoderIdentity(card.name, weights_digest(loaded.weights_path))
        self._encode_tokens = encode_tokens or self.model  # a text tower maps token ids to features

    @property
    def dim(self) -> int:
        return self.card.embed_dim

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    def truncates(self, text: str) -> bool:
        """Whether the tokenizer cuts this text to its context length (77 tokens for both families)."""
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
        if inner is not None:
            return len(inner(self.tokenizer.clean_fn(text))["input_ids"]) > self.context_length
        return len(self.tokenizer.encode(text)) + 2 > self.context_length  # + start and end tokens

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        features = self._encode_tokens(self.tokenizer(list(texts)))
        return torch.nn.functional.normalize(features, dim=-1).float().numpy()


class Encoder(TextEncoder):
    """Image batches and texts -> (n, d) float32, L2-normalised; cosine similarity is the score.

    The image tower runs on `device` in `precision` ('bf16': autocast, weights kept in float32); the text
    tower stays on the CPU, where queries, index tuning and the numpy export of the text tower need it."""

    def __init__(
        self, card: ModelCard, loaded: LoadedModel, device: str | torch.device = "cpu", precision: str = "fp32"
    ):
        super().__init__(card, loaded, encode_tokens=loaded.model.encode_text)
        self.device = torch.device(device)
        self.precision = parse_precision(precision)
        self.model.visual.to(self.device)
        # Host-to-device copies of the next batch run on their own stream, beside the current forward pass.
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def prepare(self, tiles: Sequence[Pixels]) -> torch.Tensor:
        """The card's input recipe on the host (pure and batched; see msearch.models.recipe)."""
        return prepare(self.card.input, tiles)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor, precision: str | None = None) -> np.ndarray:
        """Prepared inputs (n, bands, 224, 224) -> (n, d), in the encoder's precision unless told another."""
        return self.collect(self.launch(batch.to(self.device), precision))

    def encode_pixels(self, tiles: Sequence[Pixels]) -> np.ndarray:
        return self.encode_images(self.prepare(tiles))

    # -- the indexing path: stored digital numbers in, the recipe on the device, copies beside compute -----

    def stage(
        self,
        stored: Sequence[NativeBands],
        offsets: Sequence[float],
        full_scales: Sequence[float | None] | None = None,
    ) -> "StagedBatch":
        """Start moving tiles' stored bands (`recipe.stored_bands`, their planes tensors pinned by the loader
        on CUDA, or arrays) to the device; on CUDA the copies run on a side stream and this returns at once.
        `full_scales`: each tile's `Pixels.full_scale` (brightness tiles), None when all are digital numbers."""
        scales = list(full_scales) if full_scales is not None else None
        if self._copy_stream is None:
            moved = [tile.map(lambda plane: torch.as_tensor(plane).to(self.device)) for tile in stored]
            return StagedBatch(moved, list(offsets), None, scales)
        with torch.cuda.stream(self._copy_stream):
            moved = [
                tile.map(lambda plane: torch.as_tensor(plane).to(self.device, non_blocking=True)) for tile in stored
            ]
            ready = torch.cuda.Event()
            ready.record(self._copy_stream)
        return StagedBatch(moved, list(offsets), ready, scales)

    @torch.inference_mode()
    def launch(self, batch: "torch.Tensor | StagedBatch", precision: str | None = None) -> torch.Tensor:
        """Queue the forward pass of a prepared batch on the device, or of a staged one after running the
        recipe there (`recipe.prepare_stored`); on CUDA this returns before the device is done."""
        if isinstance(batch, StagedBatch):
            if batch.ready is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(batch.ready)
                for tile in batch.stored:  # allocated on the copy stream, used on this one
                    for plane in tile.planes:
                        plane.record_stream(compute)
            batch = prepare_stored(self.card.input, batch.stored, batch.offsets, batch.full_scales)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=(precision or self.precision) == "bf16"):
            features = self.model.encode_image(batch, normalize=False)
        # Normalised in float32: a bf16 division leaves norms up to ~0.5% off 1, visible in every cosine.
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @staticmethod
    def collect(features: torch.Tensor) -> np.ndarray:
        """Wait for launched features: (n, d) float32 on the host."""
        return features.float().cpu().numpy()

    def encode_stored(
        self,
        stored: Sequence[NativeBands],
        offsets: Sequence[float],
        full_scales: Sequence[float | None] | None = None,
    ) -> np.ndarray:
        return self.collect(self.launch(self.stage(stored, offsets, full_scales)))

    # -- the bf16 check ----------------------------------------------------------------------------------

    def bf16_agreement(self, probes: int = 4) -> float:
        """The lowest cosine between the bf16 and the fp32 embedding of a few probe inputs: smooth fields of
        the normalised input's usual range (about one band std around the band mean), fixed by a seed."""
        generator = torch.Generator().manual_seed(0)
        recipe = self.card.input
        coarse = torch.randn((probes, len(recipe.bands), 7, 7), generator=generator)
        fine = 0.3 * torch.randn((probes, len(recipe.bands), recipe.crop, recipe.crop), generator=generator)
        inputs = torch.nn.functional.interpolate(coarse, size=(recipe.crop, recipe.crop), mode="bicubic") + fine
        exact, reduced = self.encode_images(inputs, "fp32"), self.encode_images(inputs, "bf16")
        return float(np.min(np.sum(exact.astype(np.float64) * reduced, axis=1)))

    def check_bf16(self) -> float:
        """Refuse bf16 for a model whose bf16 embeddings stray from its fp32 ones (cosine below
        BF16_MIN_COSINE on the probes): its vectors would not match the ones fp32 indexes and queries hold."""
        cosine = self.bf16_agreement()
        if cosine < BF16_MIN_COSINE:
            raise PrecisionCheckError(
                f"{self.card.name}: its bf16 image embeddings differ from its fp32 ones (lowest cosine "
                f"{cosine:.5f} on the probe tiles, below {BF16_MIN_COSINE}); index with --precision fp32"
            )
        return cosine


class PrecisionCheckError(ValueError):
    """A model whose reduced-precision embeddings are too far from its fp32 ones to be indexed with them."""


# Cosine between a model's bf16 and fp32 embeddings below which bf16 is refused. Measured on the probes: a
# randomly initialised full-size ViT-B/16 with 10 bands agrees to 0.99995, the tests' tiny models to 0.99999;
# a model far below has weights or activations bf16 cannot represent.
BF16_MIN_COSINE = 0.999


@dataclass
class StagedBatch:
    stored: list[NativeBands]  # each tile's stored bands, on the encoder's device (or on their way there)
    offsets: list[float]
    ready: "torch.cuda.Event | None"  # recorded on the copy stream once the copies are done
    full_scales: list[float | None] | None = None  # each tile's brightness full scale; None: digital numbers


def load_encoder(
    model: str | Path | ModelCard = "llama3-ms-clip-base",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> Encoder:
    """An encoder by card name or card file, with weights from the hub/cache or from `checkpoint`, its image
    tower on `device` ('auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, checked before the weights are
    read). `precision` defaults to bf16 on CUDA and fp32 on the CPU; bf16 is checked against fp32 at load."""
    card = model if isinstance(model, ModelCard) else get_card(model)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    precision = resolve_precision(precision, device)
    encoder = Encoder(card, load_model(card, checkpoint), device, precision)
    if precision == "bf16":
        encoder.check_bf16()
    return encoder


def load_text_encoder(
    model: str | Path | ModelCard = "llama3-ms-clip-base", checkpoint: str | Path | None = None
) -> TextEncoder:
    """Only the text side of an encoder (see loading.load_text_model): a fraction of the time and memory."""
    card = model if isinstance(model, ModelCard) else get_card(model)
    return TextEncoder(card, load_text_model(card, checkpoint))
