"""The manifest of one encoder space: which encoder filled it, and which FAISS file is its current view."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FILE = "manifest.json"


@dataclass
class SpaceManifest:
    space: str
    card: str
    weights_sha256: str
    dim: int
    metric: str = "cosine"  # inner product of L2-normalised vectors
    index: dict = field(default_factory=lambda: {"kind": "flat"})  # index type, parameters, measured recall
    faiss_file: str | None = None
    # The FAISS file holds every vector with seq <= synced_seq, as of catalogue generation `generation`.
    synced_seq: int = 0
    generation: int = 0
    vectors: int = 0
    # The precisions of the image towers that wrote its vectors (fp32, bf16: msearch.models.device); their
    # vectors agree to a cosine of 0.999 (checked at load), so one space may hold both. Manifests written
    # before precisions were recorded come from fp32 runs, the only precision there was.
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    # The catalogue the FAISS file was built from (msearch.store.catalogue): its id, and where it was (for
    # messages; password hidden). None: written before catalogues had ids, by the directory's SQLite.
    catalogue_id: str | None = None
    catalogue_url: str | None = None

    @property
    def identity(self) -> str:
        return f"{self.card}@sha256:{self.weights_sha256[:12]}"

    @classmethod
    def read(cls, folder: Path) -> "SpaceManifest | None":
        path = folder / MANIFEST_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def write(self, folder: Path) -> None:
        """Atomically: a reader sees the old manifest or the new one, never half of either."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
        with open(tmp, "w") as handle:
            json.dump(asdict(self), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / MANIFEST_FILE)
