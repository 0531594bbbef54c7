"""Query -> embeddings -> FAISS -> metadata -> results, over one index directory.

Routing: English goes to the multispectral space, the nine other languages to a space whose card speaks
them (rs-m-clip); `space=` overrides; `fuse=True` merges the rankings of every space that understands the
query by reciprocal rank fusion. Filters run in SQL first and the vector search is restricted to the ids
they keep, so a filtered query returns k tiles whenever k matching tiles exist. Results are places by default
(msearch.search.per_place: k places whenever k places have a passing acquisition); `all_acquisitions=True`
gives one result per acquisition, ranked as before places existed.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from sqlalchemy import and_, func, or_, select

from msearch.models import ModelCard, get_card
from msearch.schema import catalog
from msearch.schema.pixels import CannotFeed
from msearch.search.language import detect_language, parse_language
from msearch.search.per_place import NPROBE_SCALE, PlaceHit, place_fields, top_places
from msearch.search.query_cache import QueryCache
from msearch.search.results import SearchResult
from msearch.store import IndexStore, SpaceIndex, SpaceMismatchError
from msearch.store.bridges import (
    ONE_SPACE_ROUTES,
    ROUTES,
    Bridge,
    BridgeMismatchError,
    bridges,
    check_bridge,
    stored_route,
)
from msearch.store.catalogue import snapshot

log = logging.getLogger(__name__)
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009)
# Rocchio's weights for the query, the liked and the unliked examples: SMART's classic choice (Salton & Buckley
# 1990), which trusts positive examples more than negative ones.
ROCCHIO_WEIGHTS = (1.0, 0.75, 0.15)


class QueryError(ValueError):
    """A query that cannot be answered as asked: the message says what to change."""


class TextVector(NamedTuple):
    """A text read as a query reads it, in the one space its scores lie in (Searcher.text_vector)."""

    space: str
    vector: np.ndarray  # unit length
    lang: str
    route: str | None  # beyond English without a chosen space: rgb or bridge; None for English or --space
    truncated: bool = False  # the tokenizer cut the text


@dataclass(frozen=True)
class Filters:
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat (WGS84)
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    max_cloud: float | None = None  # percent; tiles of unknown cloud cover are excluded
    tile_id: str | None = None  # MGRS tile, e.g. 33NZA

    def __post_init__(self):
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            if not (
                -180 <= min_lon <= 180 and -180 <= max_lon <= 180 and -90 <= min_lat <= 90 and -90 <= max_lat <= 90
            ):
                raise QueryError(f"bbox {self.bbox} is outside WGS84 longitude/latitude ranges")
            if min_lon > max_lon or min_lat > max_lat:
                raise QueryError(f"bbox must be minlon,minlat,maxlon,maxlat with min <= max, got {self.bbox}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise QueryError(f"--date-from {self.date_from} is after --date-to {self.date_to}")
        if self.max_cloud is not None and not 0 <= self.max_cloud <= 100:
            raise QueryError(f"--max-cloud is a percentage (0-100), got {self.max_cloud}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.bbox, self.date_from, self.date_to, self.max_cloud, self.tile_id))

    def where(self):
        t = catalog.tiles.c
        clauses = []
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            clauses.append(and_(t.max_lon >= min_lon, t.min_lon <= max_lon, t.max_lat >= min_lat, t.min_lat <= max_lat))
        if self.date_from is not None:
            clauses.append(t.acquired >= self.date_from.isoformat())
        if self.date_to is not None:
            clauses.append(t.acquired < (self.date_to + timedelta(days=1)).isoformat())
        if self.max_cloud is not None:
            clauses.append(and_(t.cloud_cover.is_not(None), t.cloud_cover <= self.max_cloud))
        if self.tile_id is not None:
            clauses.append(t.mgrs_tile == self.tile_id.upper().removeprefix("T"))
        return and_(*clauses)


@dataclass
class QueryAnswer:
    results: list[SearchResult]
    query: str
    lang: str | None
    spaces: list[str]
    truncated: bool = False
    matching_tiles: int | None = None  # tiles that pass the filters (None without filters)
    route: str | None = None  # beyond English: rgb, bridge or fuse (see Searcher.query)
    per_place: bool = True  # results are places (msearch.search.per_place); False: one per acquisition

    def info(self) -> dict:
        return {
            "query": self.query,
            "lang": self.lang,
            "space": "+".join(self.spaces),
            "route": self.route,
            "truncated": self.truncated,
            "matching_tiles": self.matching_tiles,
            "per_place": self.per_place,
        }


class Searcher:
    """Searches one index directory. Encoders and FAISS views are loaded on first use and kept.

    A text query loads only the text tower of its space's encoder (msearch.models.load_text_encoder), and
    query embeddings are cached (msearch.search.query_cache): a query asked before loads no model at all.
    Pass `query_cache=None` to always encode. `pixels` reads tiles and raster files (an
    msearch.indexer.readers.ArchivePixels): examples given as files and quicklooks need it. `catalogue` is
    the catalogue's URL (msearch.store.IndexStore; default: $MSEARCH_CATALOGUE, else the directory's SQLite).

    One searcher may serve concurrent threads (msearch serve): models and views are loaded once under a lock,
    and `refresh()` brings loaded views up to what index runs committed since."""

    def __init__(
        self,
        index: str | Path | None = None,
        checkpoints: dict[str, str | Path] | None = None,
        query_cache: QueryCache | None | str = "default",
        pixels=None,
        catalogue: str | None = None,
    ):
        self.store = IndexStore(index, create=False, catalogue=catalogue)
        self.pixels = pixels
        self.checkpoints = checkpoints or {}
        self.query_cache = QueryCache() if query_cache == "default" else query_cache
        self._encoders: dict[str, object] = {}  # space -> Encoder
        self._text_encoders: dict[str, object] = {}  # space -> TextEncoder (or the Encoder, if loaded)
        self._views: dict[str, SpaceIndex] = {}
        self._bridges: list[Bridge] | None = None
        # Guards the lazy loads above, and each FAISS view while refresh() adds to it or a query searches it.
        self._lock = threading.RLock()

    # -- spaces and routing -----------------------------------------------------------------------------

    def spaces(self) -> dict[str, ModelCard]:
        return {name: get_card(m.card) for name, m in self.store.manifests().items()}

    def route(self, lang: str, space: str | None = None) -> str:
        """The space that answers a query in `lang` (`space` when given); an empty space is an error."""
        return self.not_empty(self._route(lang, space))

    def not_empty(self, space: str) -> str:
        """`space`, or a QueryError when it holds no vectors: an empty answer would look like no match."""
        if self.view(space).ntotal == 0:
            raise QueryError(
                f"space {space!r} of the index at {self.store.directory} is empty: no tile has been indexed "
                f"into it; run `msearch index PATH` (see `msearch info --problems` for what failed)"
            )
        return space

    def _route(self, lang: str, space: str | None = None) -> str:
        spaces = self.spaces()
        if not spaces:
            raise QueryError(f"the index at {self.store.directory} has no encoder spaces yet; run `msearch index`")
        if space is not None:
            if space not in spaces:
                raise QueryError(f"no space {space!r} in this index (it has: {', '.join(spaces)})")
            if lang not in spaces[space].languages:
                raise QueryError(
                    f"space {space!r} ({spaces[space].name}) does not understand {lang!r}; "
                    f"it speaks {', '.join(spaces[space].languages)}"
                )
            return space
        speaking = [name for name, card in spaces.items() if lang in card.languages]
        if not speaking:
            raise QueryError(
                f"no space in this index understands {lang!r} (spaces: "
                + ", ".join(f"{n} [{', '.join(c.languages)}]" for n, c in spaces.items())
                + "); index with --model rs-m-clip for the nine languages beyond English"
            )
        # English prefers the multispectral encoder, which sees all ten bands.
        multispectral = [n for n in speaking if spaces[n].family == "ms-clip"]
        return (multispectral or speaking)[0]

    def encoder(self, space: str):
        """The space's whole encoder (images and texts), checked against the space's manifest."""
        with self._lock:
            if space not in self._encoders:
                from msearch.models import load_encoder

                self._encoders[space] = self._checked(space, load_encoder)
                self._text_encoders[space] = self._encoders[space]
            return self._encoders[space]

    def text_encoder(self, space: str):
        """The text side of the space's encoder: all a text query needs. That is the numpy export of its text
        tower when there is one (msearch.models.numpy_text: no torch import); otherwise the torch tower,
        which is then exported for the next query."""
        with self._lock:
            return self._text_encoder(space)

    def _text_encoder(self, space: str):
        if space not in self._text_encoders:
            from msearch.models.numpy_text import load_numpy_text_encoder

            manifest = self.store.manifest(space)
            encoder = load_numpy_text_encoder(manifest.card, manifest.weights_sha256)
            if encoder is None:
                from msearch.models import load_text_encoder
                from msearch.models.numpy_text_export import export_numpy_text_or_say_why

                encoder = self._checked(space, load_text_encoder)
                why_not = export_numpy_text_or_say_why(encoder)
                if why_not:
                    log.warning("%s: queries will keep loading torch: %s", space, why_not)
                else:  # this process's next queries run in numpy too (a long-lived server's, above all)
                    encoder = load_numpy_text_encoder(manifest.card, manifest.weights_sha256) or encoder
            self._text_encoders[space] = encoder
        return self._text_encoders[space]

    def _checked(self, space: str, load):
        manifest = self.store.manifest(space)
        encoder = load(manifest.card, self.checkpoints.get(space))
        if encoder.identity.weights_sha256 != manifest.weights_sha256:
            raise SpaceMismatchError(
                f"space {space!r} was built with {manifest.identity}, but the weights found now are "
                f"{encoder.identity}: pass the weights the index was built with (--checkpoint)"
            )
        return encoder

    def embed_text(self, space: str, text: str) -> tuple[np.ndarray, bool]:
        """(the text's unit vector in a space, whether the tokenizer truncated it), from the query cache
        when this space's encoder embedded the same text before."""
        manifest = self.store.manifest(space)
        if self.query_cache is not None:
            cached = self.query_cache.get(manifest.card, manifest.weights_sha256, text)
            if cached is not None:
                return cached
        encoder = self.text_encoder(space)
        vector, truncated = encoder.encode_texts([text])[0], encoder.truncates(text)
        if self.query_cache is not None:
            self.query_cache.put(manifest.card, manifest.weights_sha256, text, vector, truncated)
        return vector, truncated

    def view(self, space: str) -> SpaceIndex:
        with self._lock:
            if space not in self._views:
                self._views[space] = self.store.open_space(space)
            return self._views[space]

    def refresh(self) -> list[str]:
        """Bring the loaded FAISS views up to the catalogue's committed state, for a searcher that outlives
        index runs (msearch serve): vectors committed since are added in place; a space whose vectors were
        deleted or whose index was retrained is opened afresh. Returns the spaces that changed."""
        changed = []
        for space, view in list(self._views.items()):
            manifest = self.store.manifest(space)
            with snapshot(self.store.engine) as conn:  # one snapshot for both reads and the catch-up
                generation = conn.execute(
                    select(catalog.spaces.c.generation).where(catalog.spaces.c.name == space)
                ).scalar()
                latest = conn.execute(
                    select(func.max(catalog.vectors.c.seq)).where(catalog.vectors.c.space == space)
                ).scalar()
                if manifest.faiss_file != view.manifest.faiss_file or int(generation or 0) != view.generation:
                    fresh = self.store.open_space(space)
                    with self._lock:
                        self._views[space] = fresh
                    changed.append(space)
                elif latest is not None and latest > view.synced_seq:
                    with self._lock:
                        self.store.catch_up(view, conn)
                    changed.append(space)
        return changed

    # -- queries ----------------------------------------------------------------------------------------

    def query(
        self,
        text: str,
        top_k: int = 10,
        lang: str = "auto",
        space: str | None = None,
        fuse: bool = False,
        filters: Filters = Filters(),
        route: str | None = None,
        all_acquisitions: bool = False,
    ) -> QueryAnswer:
        """Top-k places for a text (msearch.search.per_place), or with `all_acquisitions` the top-k tiles, one
        result per acquisition. Beyond English, `route` says how the query reaches the index (ROUTES); left
        out, it is the route a stored evaluation found best for the language, else rgb (`default_route`)."""
        if not text or not text.strip():
            raise QueryError("the query is empty: give some words to search for")
        if top_k <= 0:
            raise QueryError(f"--top-k must be at least 1, got {top_k}")
        lang = language_of(text, lang)
        if route is not None and route not in ROUTES:
            raise QueryError(f"--route must be one of {', '.join(ROUTES)}, got {route!r}")
        refuse_route_beside(route, lang, space, fuse)
        if lang != "en" and space is None and not fuse and route is None:
            route, _ = self.default_route(lang)
        allowed = self.allowed_ids(filters)
        matching = len(allowed) if allowed is not None else None
        if route in ("bridge", "fuse"):
            if not all_acquisitions:
                routed = {}

                def rank(depth: int) -> list[tuple[int, float]]:
                    ranked, routed["names"], routed["truncated"] = self.routed_ranking(
                        text.strip(), lang, route, depth, allowed
                    )
                    return ranked

                hits = self._top_places(rank, top_k, filters, allowed, [self.route(lang)])
                names = routed["names"]
                results = self._place_results(hits, "+".join(names))
                return QueryAnswer(results, text, lang, names, routed["truncated"], matching, route)
            ranked, names, truncated = self.routed_ranking(text.strip(), lang, route, top_k, allowed)
            return QueryAnswer(
                self.results_of(ranked[:top_k], "+".join(names)),
                text,
                lang,
                names,
                truncated,
                matching,
                route,
                per_place=False,
            )
        if fuse:
            if space is not None:
                raise QueryError("--fuse merges every space that understands the query: leave out --space")
            names = [self.not_empty(n) for n, card in self.spaces().items() if lang in card.languages]
            if not names:
                self.route(lang)  # raises the clear error
        else:
            names = [self.route(lang, space)]
        truncated = False
        vectors = {}
        for name in names:
            vectors[name], was_truncated = self.embed_text(name, text.strip())
            truncated |= was_truncated
        if not all_acquisitions:
            if len(names) == 1:
                hits = self.place_ranking(names[0], vectors[names[0]], top_k, filters, allowed)
            else:

                def rank(depth: int) -> list[tuple[int, float]]:
                    return reciprocal_rank_fusion(
                        [self._deep_search(n, vectors[n], max(depth, 100), allowed) for n in names]
                    )

                hits = self._top_places(rank, top_k, filters, allowed, names)
            results = self._place_results(hits, "+".join(names))
            return QueryAnswer(results, text, lang, names, truncated, matching, route)
        rankings = {}
        for name in names:
            rankings[name] = self.search_vector(
                name, vectors[name], top_k if len(names) == 1 else max(top_k, 100), allowed
            )
        ranked = rankings[names[0]] if len(names) == 1 else reciprocal_rank_fusion(list(rankings.values()))
        results = self.results_of(ranked[:top_k], "+".join(names))
        return QueryAnswer(results, text, lang, names, truncated, matching, route, per_place=False)

    def text_vector(
        self, text: str, lang: str = "auto", space: str | None = None, route: str | None = None
    ) -> TextVector:
        """A text read in the one space a score for it lies in, for what compares scores (a change, a
        timeline). English, or with `space`: the text's unit vector in the space a query answers it in (no
        route). Beyond English, `route` (ONE_SPACE_ROUTES) says how: rgb, its vector in the multilingual space;
        bridge, that vector carried into the multispectral space by the bridge, as routed_ranking searches it.
        Left out, the route a stored comparison found best of those two (`default_route`), else rgb. fuse is
        refused: a fused ranking is merged by rank and has no scores to compare."""
        if not text or not text.strip():
            raise QueryError("the query is empty: give some words to search for")
        lang = language_of(text, lang)
        if route == "fuse":
            raise QueryError(
                "--route fuse merges two spaces' rankings by rank, so it gives no scores to compare: a change "
                "or a timeline compares scores within one space; choose --route rgb or --route bridge"
            )
        if route is not None and route not in ONE_SPACE_ROUTES:
            raise QueryError(f"--route must be one of {', '.join(ONE_SPACE_ROUTES)}, got {route!r}")
        refuse_route_beside(route, lang, space)
        if lang != "en" and space is None and route is None:
            route, _ = self.default_route(lang, among=ONE_SPACE_ROUTES)
        name = self.route(lang, space)
        vector, truncated = self.embed_text(name, text.strip())
        if route == "bridge":
            name, vector = self.bridged_vector(lang, vector, route)
        return TextVector(name, vector, lang, route, truncated)

    # -- routes beyond English ----------------------------------------------------------------------------

    def bridges(self) -> list[Bridge]:
        if self._bridges is None:
            self._bridges = bridges(self.store.directory)
        return self._bridges

    def bridge_for(self, lang: str) -> Bridge | None:
        """The stored bridge that carries `lang` into a multispectral space, checked against both spaces'
        weights (a bridge fitted for other weights is an error, never applied)."""
        spaces = self.spaces()
        for bridge in self.bridges():
            source, target = spaces.get(bridge.from_space), spaces.get(bridge.to_space)
            if source and target and lang in source.languages and target.family == "ms-clip":
                try:
                    check_bridge(bridge, self.store.manifests())
                except BridgeMismatchError as exc:
                    raise QueryError(str(exc)) from exc
                return bridge
        return None

    def default_route(self, lang: str, among: tuple[str, ...] = ROUTES) -> tuple[str, str]:
        """(route, why) for a language beyond English: what a stored route comparison (`msearch eval
        --routes --save-routes`) found best for it among `among`, else rgb."""
        bridge = self.bridge_for(lang)
        if bridge is None:
            return "rgb", "no bridge in this index (`msearch align` fits one)"
        return stored_route(self.store.directory, bridge, lang, among)

    def bridged_vector(self, lang: str, vector: np.ndarray, route: str) -> tuple[str, np.ndarray]:
        """(the multispectral space, the vector there) of a text's vector in the multilingual space, carried by
        the bridge for `lang`; Bridge.apply normalises, so it is a unit vector as every query's is."""
        bridge = self.bridge_for(lang)
        if bridge is None:
            raise QueryError(f"--route {route} needs a bridge into the multispectral space: run `msearch align`")
        return self.not_empty(bridge.to_space), bridge.apply(vector)

    def routed_ranking(
        self, text: str, lang: str, route: str, k: int, allowed: np.ndarray | None = None
    ) -> tuple[list[tuple[int, float]], list[str], bool]:
        """(ranking, spaces searched, truncated) of a query beyond English by one route. bridge: the query's
        vector in the multilingual space, mapped by the bridge and searched in the multispectral space; rgb:
        searched in the multilingual space; fuse: both merged by reciprocal rank fusion."""
        source = self.route(lang)
        vector, truncated = self.embed_text(source, text)
        if route == "rgb":
            return self.search_vector(source, vector, k, allowed), [source], truncated
        target, bridged_vector = self.bridged_vector(lang, vector, route)
        depth = k if route == "bridge" else max(k, 100)
        bridged = self.search_vector(target, bridged_vector, depth, allowed)
        if route == "bridge":
            return bridged, [target], truncated
        direct = self.search_vector(source, vector, depth, allowed)
        return reciprocal_rank_fusion([direct, bridged]), [source, target], truncated

    def like(
        self,
        example: str,
        top_k: int = 10,
        space: str | None = None,
        filters: Filters = Filters(),
        all_acquisitions: bool = False,
    ) -> QueryAnswer:
        """Places that look like an example: a tile id, a catalogued path, or a raster file. The example's own
        place is left out (its other dates would look most like it); with `all_acquisitions`, tiles, one result
        per acquisition, only the example tile itself left out."""
        if top_k <= 0:
            raise QueryError(f"--top-k must be at least 1, got {top_k}")
        name, vector, tile_id = self.example_vector(example, space)
        allowed = self.allowed_ids(filters)
        if tile_id is not None and allowed is not None:
            allowed = allowed[allowed != tile_id]
        matching = len(allowed) if allowed is not None else None
        if not all_acquisitions:
            hits = self._top_places(
                lambda depth: self._deep_search(name, vector, depth, allowed),
                top_k,
                filters,
                allowed,
                [name],
                examples=[tile_id] if tile_id is not None else [],
                exact=(name, vector),
            )
            return QueryAnswer(
                self._place_results(hits, name), f"like:{example}", None, [name], matching_tiles=matching
            )
        ranked = [(t, s) for t, s in self.search_vector(name, vector, top_k + 1, allowed) if t != tile_id][:top_k]
        return QueryAnswer(
            self.results_of(ranked, name), f"like:{example}", None, [name], matching_tiles=matching, per_place=False
        )

    def example_vector(self, example: str, space: str | None = None) -> tuple[str, np.ndarray, int | None]:
        """(space, vector, tile id or None) of an example as `like` searches with it: a catalogued tile's stored
        vector in the space (the one asked for, else the multispectral one), or a raster file's embedding."""
        name = self.example_space(space)
        tile_id = self.tile_id_of(example)
        if tile_id is not None:
            try:
                vector = self.store.vectors_of(name, [tile_id])[0]
            except KeyError:  # indexed into other spaces only: an RGB file has no multispectral vector
                others = [other for other in self.spaces() if other != name]
                hint = f"; search another space with --space {others[0]}" if others else ""
                raise QueryError(
                    f"{example} cannot be searched in space {name!r}: it was indexed without a vector there "
                    f"(it lacks the bands that space needs){hint}"
                ) from None
        else:
            vector = self.embed_file(example, name)
        return name, vector, tile_id

    def example_space(self, space: str | None) -> str:
        """The space a search by example runs in: the one asked for, else the multispectral one."""
        spaces = self.spaces()
        if not spaces:
            self.route("en")  # raises the clear error
        name = space or next((n for n, c in spaces.items() if c.family == "ms-clip"), None) or next(iter(spaces))
        if name not in spaces:
            raise QueryError(f"no space {space!r} in this index (it has: {', '.join(spaces) or 'none'})")
        return self.not_empty(name)

    def feedback(
        self,
        text: str | None,
        like: Sequence[int] = (),
        unlike: Sequence[int] = (),
        top_k: int = 10,
        lang: str = "auto",
        space: str | None = None,
        filters: Filters = Filters(),
        all_acquisitions: bool = False,
    ) -> QueryAnswer:
        """Relevance feedback, Rocchio on unit vectors: the query vector is

            q = normalise(a * t + b * mean(liked) - c * mean(unliked)),   (a, b, c) = ROCCHIO_WEIGHTS

        where t is the text's unit vector (the term is left out without text) and liked / unliked are the
        catalogued tiles' stored unit vectors in the searched space (a mean is left out when its list is
        empty). With text the space is routed as for query(), without it as for like(). The examples
        themselves are left out of the results, and per place (the default) their places too."""
        text = text.strip() if text else ""
        if not text and not like:
            raise QueryError("give a query text or at least one liked tile to search by example")
        if top_k <= 0:
            raise QueryError(f"top_k must be at least 1, got {top_k}")
        both = sorted({int(t) for t in like} & {int(t) for t in unlike})
        if both:
            raise QueryError(f"tiles {both} are both liked and unliked: keep each in one list")
        detected = None
        if text:
            detected = parse_language(lang)
            if detected == "auto":
                detected = detect_language(text)
            name = self.route(detected, space)
        else:
            name = self.example_space(space)
        alpha, beta, gamma = ROCCHIO_WEIGHTS
        truncated = False
        vector = np.zeros(self.store.manifest(name).dim, dtype=np.float64)
        if text:
            embedded, truncated = self.embed_text(name, text)
            vector += alpha * embedded
        for examples, weight in ((like, beta), (unlike, -gamma)):
            if examples:
                vector += weight * self._example_vectors(name, examples).mean(axis=0)
        norm = np.linalg.norm(vector)
        if not np.isfinite(norm) or norm < 1e-9:
            raise QueryError("the liked and unliked examples cancel out: remove an unliked tile or add text")
        examples = {int(t) for t in (*like, *unlike)}
        allowed = self.allowed_ids(filters)
        if allowed is not None:
            allowed = allowed[~np.isin(allowed, list(examples))]
        shown = text or "like:" + ",".join(str(int(t)) for t in like)
        matching = len(allowed) if allowed is not None else None
        if not all_acquisitions:
            query = vector / norm
            hits = self._top_places(
                lambda depth: self._deep_search(name, query, depth, allowed),
                top_k,
                filters,
                allowed,
                [name],
                examples=sorted(examples),
                exact=(name, query),
            )
            return QueryAnswer(self._place_results(hits, name), shown, detected, [name], truncated, matching)
        ranked = [(t, s) for t, s in self.search_vector(name, vector / norm, top_k + len(examples), allowed)]
        ranked = [(t, s) for t, s in ranked if t not in examples][:top_k]
        return QueryAnswer(self.results_of(ranked, name), shown, detected, [name], truncated, matching, per_place=False)

    def _example_vectors(self, space: str, tile_ids: Sequence[int]) -> np.ndarray:
        try:
            return self.store.vectors_of(space, [int(t) for t in tile_ids])
        except KeyError:
            present = self.store.tiles_by_id(tile_ids)
            missing = [int(t) for t in tile_ids if int(t) not in present]
            if missing:
                raise QueryError(f"no tiles with ids {missing[:10]} in this index") from None
            raise QueryError(f"some example tiles have no vectors in space {space!r}: search another space") from None

    def catalogued_tile_id(self, name: str) -> int:
        """The id of a catalogued tile named by its id, key (a chip's `path#col,row,width,height`) or path."""
        if name.isdigit() and not self.store.tiles_by_id([int(name)]):
            raise QueryError(f"no tile with id {name} in this index")
        tile_id = self.tile_id_of(name)
        if tile_id is None:
            raise QueryError(f"{name!r} is a file, not a catalogued tile: index it first, or name a tile id")
        return tile_id

    def tile_id_of(self, example: str) -> int | None:
        t = catalog.tiles.c
        with self.store.engine.connect() as conn:
            if example.isdigit():
                found = conn.execute(select(t.id).where(t.id == int(example))).scalar()
                if found is not None:
                    return int(found)
            found = conn.execute(select(t.id).where(or_(t.key == example, t.path == example)).limit(1)).scalar()
        if found is not None:
            return int(found)
        if not Path(example).exists():
            raise QueryError(f"{example!r} is neither a tile id, a catalogued path, nor a file")
        whole_file = [row for row in self._catalogued_rows_of_file(example) if row.key == row.path]
        return int(whole_file[0].id) if whole_file else None

    def _catalogued_rows_of_file(self, path: str) -> list:
        """Catalogue rows (id, key, path, reader, file_band_order) read from this file, however it is spelt: under
        which indexed root it lies is found by resolving the roots, which are few."""
        t = catalog.tiles.c
        target = Path(path).resolve()
        rows = []
        with self.store.engine.connect() as conn:
            for root in conn.execute(select(t.root).distinct()).scalars():
                try:
                    relative = target.relative_to(Path(root).resolve()).as_posix()
                except ValueError:
                    continue
                rows += conn.execute(
                    select(t.id, t.key, t.path, t.reader, t.file_band_order).where(t.root == root, t.path == relative)
                ).all()
        return rows

    def embed_file(self, path: str, space: str) -> np.ndarray:
        # A file catalogued only in chips is read with the band order it was indexed with.
        # (`bands` lists them in canonical order; a multiband file's own order is its `file_band_order`)
        catalogued = [row.file_band_order for row in self._catalogued_rows_of_file(path) if row.reader == "geotiff"]
        band_order = tuple(catalogued[0].split(",")) if catalogued and catalogued[0] else None
        try:
            pixels = self._pixel_reader().of_file(path, band_order=band_order)
        except ValueError as exc:
            raise QueryError(f"{path}: {exc}") from exc
        try:
            return self.encoder(space).encode_pixels([pixels])[0]
        except CannotFeed as exc:  # an RGB file, for a multispectral space
            others = [name for name in self.spaces() if name != space]
            hint = f"; search another space with --space {others[0]}" if others else ""
            raise QueryError(f"{path} cannot be searched in space {space!r}: {exc}{hint}") from exc

    def tile_pixels(self, tile_id: int):
        """Re-read a catalogued tile's pixels (for quicklooks), with the band order it was indexed with."""
        return self._pixel_reader().of_tile(self.store.tiles_by_id([tile_id])[tile_id])

    def _pixel_reader(self):
        if self.pixels is None:
            raise QueryError("this searcher was made without a pixel reader, so it cannot read raster files")
        return self.pixels

    def allowed_ids(self, filters: Filters) -> np.ndarray | None:
        if not filters.active:
            return None
        with self.store.engine.connect() as conn:
            ids = conn.execute(select(catalog.tiles.c.id).where(filters.where())).scalars().all()
        return np.asarray(ids, dtype=np.int64)

    def search_vector(
        self,
        space: str,
        vector: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        nprobe_scale: int = 1,
        rerank: bool = True,
    ) -> list[tuple[int, float]]:
        """Top-k (tile id, cosine) of one vector in a space, restricted to `allowed` ids when given (a small
        subset is scored exactly, a large one searched through the index with an id selector). `nprobe_scale`
        and `rerank` as for msearch.store.ann.search."""
        if allowed is not None and len(allowed) == 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        view = self.view(space)
        with self._lock:
            scores, ids = self.store.search(view, query, k, allowed, nprobe_scale, rerank)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _deep_search(
        self, space: str, vector: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[tuple[int, float]]:
        """search_vector for places: per_place.NPROBE_SCALE times the lists probed, candidates not re-ranked
        (per_place rescores every acquisition of the places they reach), and never short of k while k
        candidates exist: an inverted file's probed lists may hold fewer than a deep search asks for, and then
        4x more lists are probed, up to all of them. (A filtered search is never short: ann.search answers it
        exactly where the probed lists fall short.)"""
        view = self.view(space)
        scale = NPROBE_SCALE
        while True:
            found = self.search_vector(space, vector, k, allowed, scale, rerank=False)
            if allowed is not None or view.ann.kind == "flat" or len(found) >= min(k, view.ntotal):
                return found
            if view.ann.params["nprobe"] * scale >= view.ann.params["nlist"]:
                return found
            scale *= 4

    def place_ranking(
        self,
        space: str,
        vector: np.ndarray,
        k: int,
        filters: Filters = Filters(),
        allowed: np.ndarray | None = None,
    ) -> list[PlaceHit]:
        """The top-k places for a unit query vector in a space, as a text query ranks them (`allowed`: the
        filters' tile ids, when the caller has them already)."""
        if allowed is None:
            allowed = self.allowed_ids(filters)
        return self._top_places(
            lambda depth: self._deep_search(space, vector, depth, allowed),
            k,
            filters,
            allowed,
            [space],
            exact=(space, vector),
        )

    def _top_places(
        self,
        rank,
        top_k: int,
        filters: Filters,
        allowed: np.ndarray | None,
        spaces: list[str],
        examples: Sequence[int] = (),
        exact: tuple[str, np.ndarray] | None = None,
    ) -> list[PlaceHit]:
        """per_place.top_places over `rank`, with the examples and their places left out."""
        excluded = frozenset(int(t) for t in examples)
        example_places = frozenset(p for p in self.store.places_of(excluded).values() if p is not None)
        candidates = len(allowed) if allowed is not None else max(self.view(name).ntotal for name in spaces)
        return top_places(
            rank,
            top_k,
            self.store,
            candidates=candidates,
            where=filters.where() if filters.active else None,
            exclude=excluded,
            exclude_places=example_places,
            exact=exact,
        )

    def _place_results(self, hits: list[PlaceHit], space: str) -> list[SearchResult]:
        """One result per place: its best acquisition, with the place's passing acquisitions and dates."""
        results = self.results_of([hit.best for hit in hits], space)
        return [replace(result, **place_fields(hit)) for result, hit in zip(results, hits)]

    def results_of(self, ranked: list[tuple[int, float]], space: str) -> list[SearchResult]:
        rows = self.store.tiles_by_id([t for t, _ in ranked])
        results = []
        for rank, (tile_id, score) in enumerate(ranked, start=1):
            row = rows[tile_id]
            results.append(
                SearchResult(
                    rank=rank,
                    score=score,
                    tile_id=tile_id,
                    path=row["key"],
                    root=row["root"],
                    lon=row["centre_lon"],
                    lat=row["centre_lat"],
                    date=row["acquired"],
                    tile=row["mgrs_tile"],
                    cloud=row["cloud_cover"],
                    space=space,
                    footprint=json.loads(row["footprint"]) if row["footprint"] else None,
                    place_id=row["place_id"],
                )
            )
        return results


def language_of(text: str, lang: str) -> str:
    """The language a query is read as: `lang`, or the detected one for 'auto'."""
    try:
        lang = parse_language(lang)
        return detect_language(text) if lang == "auto" else lang
    except ValueError as exc:  # an unknown --lang, or a script none of the encoders learnt
        raise QueryError(str(exc)) from None


def refuse_route_beside(route: str | None, lang: str, space: str | None, fuse: bool | None = None) -> None:
    """A route is how a text beyond English reaches the index: refused for English and with a chosen space (and
    with --fuse, where the caller has it: `fuse` not None)."""
    if route is not None and (lang == "en" or space is not None or fuse):
        others = "--space" if fuse is None else "--space or --fuse"
        raise QueryError(
            "--route chooses how a query beyond English reaches the index: "
            f"leave it out for English, and do not combine it with {others}"
        )


def reciprocal_rank_fusion(rankings: list[list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Merge ranked lists: score(tile) = sum over lists of 1 / (k + rank). Ties keep first-seen order."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (tile_id, _) in enumerate(ranking, start=1):
            fused[tile_id] = fused.get(tile_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])
