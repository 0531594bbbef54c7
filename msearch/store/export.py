"""Export an index as GeoParquet: one row per tile, its catalogue fields, footprint and embeddings.

The file follows GeoParquet 1.1 (https://geoparquet.org/releases/v1.1.0/), in the spirit of Major TOM's
embedding datasets, so GeoPandas (`read_parquet`), DuckDB (spatial) and TorchGeo read it as it is:

- `geometry`: the tile footprint, WKB, longitude/latitude on WGS84. The `geo` metadata names its CRS
  explicitly as the PROJJSON of OGC:CRS84 (what an omitted crs would default to; null would mean
  "unknown", which it is not);
- `bbox`: the footprint's bounding box as a struct, declared as the geometry's `covering`, so that
  readers can skip row groups outside an area of interest;
- `embedding_<space>`: one column per encoder space, fixed_size_list<float32>[dim], L2-normalised as
  stored; null for a tile that has no vector in that space;
- file metadata `msearch`: each exported space's manifest (encoder identity, dim, metric) and its column.

Rows are streamed from SQLite in row groups, so memory holds one row group, not the whole index; the file
is written under a temporary name and moved into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from sqlalchemy import Float, Integer, and_, select
from sqlalchemy.engine import Connection

from msearch import __version__
from msearch.schema import catalog
from msearch.schema.manifest import SpaceManifest
from msearch.store import vector_codec
from msearch.store.catalogue import snapshot
from msearch.store.index_store import IndexStore, id_chunks

GEOPARQUET_VERSION = "1.1.0"
GEOMETRY_COLUMN = "geometry"
BBOX_COLUMN = "bbox"
ROW_GROUP_ROWS = 10_000
# Bookkeeping of the indexer (change detection, run ids) that means nothing outside this index; the
# footprint leaves as the geometry column.
NOT_EXPORTED = ("stat_signature", "run_id", "footprint")
BBOX_TYPE = pa.struct([(name, pa.float64()) for name in ("xmin", "ymin", "xmax", "ymax")])


def embedding_column(space: str) -> str:
    return f"embedding_{space}"


def export_geoparquet(
    index: str | os.PathLike | None,
    out_path: str | os.PathLike,
    spaces: Sequence[str] | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    catalogue: str | None = None,
) -> int:
    """Write the index's tiles (and the vectors of `spaces`, default: all) to a GeoParquet file; returns
    the number of rows written."""
    out_path = _checked_output(out_path)
    store = IndexStore(index, create=False, catalogue=catalogue)
    manifests = [store.manifest(space) for space in spaces] if spaces else list(store.manifests().values())
    # Two passes (bbox, then rows) must see the same tiles while an indexing run may be writing.
    with snapshot(store.engine) as conn:
        schema = _schema(manifests, _footprints_bbox(conn))
        return _write_atomically(out_path, schema, _record_batches(conn, manifests, schema, row_group_rows))


def export_tiles(
    store: IndexStore, out_path: str | os.PathLike, tile_ids: Sequence[int], columns: dict[str, pa.Array]
) -> int:
    """Write the given tiles, in the order given, as GeoParquet like `export_geoparquet` (no embeddings), with
    `columns` (one value per tile, in the same order) after the catalogue's: a detector's ranked tiles with
    their probabilities. Returns the number of rows written."""
    out_path = _checked_output(out_path)
    ids = [int(t) for t in tile_ids]
    extra = [pa.field(name, array.type) for name, array in columns.items()]
    with snapshot(store.engine) as conn:
        rows = {}
        for chunk in id_chunks(ids):
            statement = select(*_tile_columns(), catalog.tiles.c.footprint).where(catalog.tiles.c.id.in_(chunk))
            rows.update({row.id: row for row in conn.execute(statement)})
    ordered = [rows[t] for t in ids]
    bbox = _footprints_bbox_of([row.footprint for row in ordered if row.footprint is not None])
    schema = _schema([], bbox, extra)

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(ordered), ROW_GROUP_ROWS):
            part = ordered[start : start + ROW_GROUP_ROWS]
            arrays = _tile_arrays(part, schema)
            arrays += [columns[field.name].slice(start, len(part)) for field in extra]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return _write_atomically(out_path, schema, batches())


def _checked_output(out_path: str | os.PathLike) -> Path:
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        # checked here, or the error would name the temporary file written beside the output
        raise FileNotFoundError(
            f"cannot write {out_path}: the folder {out_path.parent} does not exist; create it first "
            f"(mkdir -p {out_path.parent}) or choose another path"
        )
    return out_path


def _write_atomically(out_path: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
    """Write the batches (a row group each) under a temporary name, then move the file into place."""
    tmp = out_path.parent / f".{out_path.name}.{os.getpid()}.tmp"
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


# -- schema and file metadata ----------------------------------------------------------------------------


def _tile_columns() -> list:
    return [column for column in catalog.tiles.c if column.name not in NOT_EXPORTED]


def _arrow_type(column) -> pa.DataType:
    if column.name == "bands":
        return pa.list_(pa.string())
    if isinstance(column.type, Integer):
        return pa.int64()
    if isinstance(column.type, Float):
        return pa.float64()
    return pa.string()


def _schema(manifests: list[SpaceManifest], bbox: list[float] | None, extra: Sequence[pa.Field] = ()) -> pa.Schema:
    fields = [pa.field(column.name, _arrow_type(column), nullable=column.name != "id") for column in _tile_columns()]
    fields.append(pa.field(GEOMETRY_COLUMN, pa.binary()))
    fields.append(pa.field(BBOX_COLUMN, BBOX_TYPE))
    fields.extend(pa.field(embedding_column(m.space), pa.list_(pa.float32(), m.dim)) for m in manifests)
    fields.extend(extra)
    metadata = {"geo": json.dumps(geo_metadata(bbox)), "msearch": json.dumps(msearch_metadata(manifests))}
    return pa.schema(fields, metadata=metadata)


def geo_metadata(bbox: list[float] | None) -> dict:
    """The GeoParquet 1.1 `geo` file metadata for the footprint column."""
    from rasterio.crs import CRS

    geometry = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "crs": CRS.from_user_input("OGC:CRS84").to_dict(projjson=True),
        "covering": {"bbox": {key: [BBOX_COLUMN, key] for key in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if bbox is not None:  # an empty index has no extent
        geometry["bbox"] = bbox
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: geometry}}


def msearch_metadata(manifests: list[SpaceManifest]) -> dict:
    return {
        "msearch_version": __version__,
        "spaces": {
            m.space: {
                "column": embedding_column(m.space),
                "identity": m.identity,
                "card": m.card,
                "weights_sha256": m.weights_sha256,
                "dim": m.dim,
                "metric": m.metric,
            }
            for m in manifests
        },
    }


# -- rows ---------------------------------------------------------------------------------------------------


def _footprints_bbox(conn: Connection) -> list[float] | None:
    """[xmin, ymin, xmax, ymax] over every footprint, or None when there is none."""
    extent = None
    result = conn.execution_options(yield_per=ROW_GROUP_ROWS).execute(
        select(catalog.tiles.c.footprint).where(catalog.tiles.c.footprint.is_not(None))
    )
    for part in result.partitions():
        part_extent = _footprints_bbox_of([row[0] for row in part])
        extent = (
            part_extent
            if extent is None
            else [min(extent[0], part_extent[0]), min(extent[1], part_extent[1])]
            + [max(extent[2], part_extent[2]), max(extent[3], part_extent[3])]
        )
    return extent


def _footprints_bbox_of(footprints: list[str]) -> list[float] | None:
    """[xmin, ymin, xmax, ymax] over GeoJSON footprints, or None for none."""
    if not footprints:
        return None
    bounds = shapely.bounds(shapely.from_geojson(footprints))
    return [float(v) for v in np.concatenate([bounds[:, :2].min(axis=0), bounds[:, 2:].max(axis=0)])]


def _record_batches(
    conn: Connection, manifests: list[SpaceManifest], schema: pa.Schema, row_group_rows: int
) -> Iterator[pa.RecordBatch]:
    """One record batch (written as one row group) per `row_group_rows` tiles, in tile id order."""
    tiles = catalog.tiles
    columns = _tile_columns()
    statement = select(*columns, tiles.c.footprint)
    for i, manifest in enumerate(manifests):
        vectors = catalog.vectors.alias(f"vectors_{i}")
        statement = statement.add_columns(vectors.c.vector).outerjoin(
            vectors, and_(vectors.c.tile_id == tiles.c.id, vectors.c.space == manifest.space)
        )
    result = conn.execution_options(yield_per=row_group_rows).execute(statement.order_by(tiles.c.id))
    for part in result.partitions():
        arrays = _tile_arrays(part, schema)
        for i, manifest in enumerate(manifests):
            arrays.append(_embedding_array([row[len(columns) + 1 + i] for row in part], manifest))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _tile_arrays(part: list, schema: pa.Schema) -> list[pa.Array]:
    """The catalogue columns, geometry and bbox of rows that hold `_tile_columns()` and then the footprint."""
    columns = _tile_columns()
    arrays = [
        _tile_array(column, [row[j] for row in part], schema.field(column.name).type)
        for j, column in enumerate(columns)
    ]
    geometries = shapely.from_geojson([row[len(columns)] for row in part])
    arrays.append(pa.array(shapely.to_wkb(geometries), pa.binary()))
    arrays.append(_bbox_array(geometries))
    return arrays


def _tile_array(column, values: list, arrow_type: pa.DataType) -> pa.Array:
    if column.name == "bands":
        values = [v.split(",") if v else [] for v in values]
    return pa.array(values, arrow_type)


def _bbox_array(geometries: np.ndarray) -> pa.StructArray:
    bounds = shapely.bounds(geometries)
    missing = pa.array(np.isnan(bounds[:, 0]))
    return pa.StructArray.from_arrays([pa.array(bounds[:, k]) for k in range(4)], fields=list(BBOX_TYPE), mask=missing)


def _embedding_array(blobs: list[bytes | None], manifest: SpaceManifest) -> pa.FixedSizeListArray:
    """Stored vectors as a float32 fixed-size list column; rows without a vector are null (zero-filled
    underneath, as a fixed-size list must have dim values per slot)."""
    matrix = np.zeros((len(blobs), manifest.dim), dtype=np.float32)
    present = np.zeros(len(blobs), dtype=bool)
    for i, blob in enumerate(blobs):
        if blob is None:
            continue
        if len(blob) != vector_codec.stored_size(manifest.dim):
            raise ValueError(
                f"a stored {manifest.space} vector has {len(blob) - vector_codec.SCALE_BYTES} values, its manifest "
                f"says {manifest.dim}"
            )
        matrix[i] = vector_codec.decode(blob, 1, manifest.dim)[0]
        present[i] = True
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), manifest.dim, mask=pa.array(~present))
