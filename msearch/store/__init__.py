"""What the indexer writes and the searcher reads: the catalogue (tiles, vectors, runs, problems), and per
encoder space a manifest and a FAISS search index that is a rebuildable view of the stored vectors."""

from msearch.store.index_store import IndexStore, SpaceIndex, SpaceMismatchError

__all__ = ["IndexStore", "SpaceIndex", "SpaceMismatchError"]
