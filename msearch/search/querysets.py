"""Labelled query sets: which tiles each query should find.

Two sources:
- an explicit query file, CSV with the columns `query,lang,relevant` or JSON Lines with the same keys. `lang`
  may be empty or missing. `relevant` lists tiles separated by `;` (in JSON Lines also a list of strings),
  each a path relative to the indexed root (`River/River_3.tif`) or a tile id;
- a labels file like the sample data's `labels.csv` (a `file` column and a `label` or `labels` column, several
  labels `;`-separated): one query per class, relevant = the files carrying that label.

Relevant entries stay raw strings here: only the index knows its tiles. `resolve` maps them through a lookup
the index provides and reports the ones it does not know.

Problems policy: what makes a row unreadable (wrong number of fields, no query text, bad JSON, a missing
required column) raises `QuerySetError` naming the file and line. What leaves a usable query set is collected
as warning strings in `QuerySet.warnings` (not Python warnings, so a CLI can print them and a test can assert
them): unknown columns, queries with an empty relevance list (kept; they score 0), repeated relevant entries
(dropped), repeated queries (the later one is dropped), unlabelled files in a labels file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from msearch.models.prompts import EUROSAT_SAMPLE_QUERIES  # noqa: F401  (re-exported: the shipped query set)

QUERY_COLUMNS = ("query", "lang", "relevant")
REQUIRED_COLUMNS = ("query", "relevant")
SEPARATOR = ";"


class QuerySetError(ValueError):
    """A query or labels file that cannot be read as a query set."""


@dataclass(frozen=True)
class Query:
    """One query, its language ("" when not given), its relevant tiles as written, and where it was read."""

    query: str
    lang: str
    relevant: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class QuerySet:
    queries: tuple[Query, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    """Relevant entries mapped to tile ids (in first-seen order, each once) and the entries nobody knows."""

    ids: tuple[int, ...]
    unknown: tuple[str, ...]


def split_relevant(text: str) -> list[str]:
    """`a.tif; b.tif;` -> ["a.tif", "b.tif"]: entries trimmed, empty ones (a trailing `;`) dropped."""
    return [entry.strip() for entry in text.split(SEPARATOR) if entry.strip()]


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line number, header, fields) for each non-blank record; utf-8-sig so an Excel BOM is not a column name."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise QuerySetError(f"{path}: empty file")
        header = [name.strip() for name in header]
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                raise QuerySetError(
                    f"{path}:{reader.line_num}: {len(fields)} fields where the header has {len(header)}"
                )
            yield reader.line_num, header, fields


def _read_query_csv(path: Path, warnings: list[str]) -> Iterator[tuple[str, dict[str, object]]]:
    header_checked = False
    for line_number, header, fields in _csv_rows(path):
        if not header_checked:
            _check_columns(header, path, warnings)
            header_checked = True
        yield f"{path}:{line_number}", dict(zip(header, fields))


def _read_query_jsonl(path: Path, warnings: list[str]) -> Iterator[tuple[str, dict[str, object]]]:
    unknown_seen: set[str] = set()
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise QuerySetError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise QuerySetError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in REQUIRED_COLUMNS if key not in record]
            if missing:
                raise QuerySetError(f"{where}: missing key(s) {', '.join(missing)}")
            unknown = sorted(set(record) - set(QUERY_COLUMNS) - unknown_seen)
            if unknown:
                warnings.append(f"{where}: unknown key(s) ignored: {', '.join(unknown)}")
                unknown_seen.update(unknown)
            yield where, record


def _check_columns(header: list[str], path: Path, warnings: list[str]) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise QuerySetError(f"{path}:1: missing column(s) {', '.join(missing)} (have: {', '.join(header)})")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise QuerySetError(f"{path}:1: repeated column(s) {', '.join(repeated)}")
    unknown = [name for name in header if name not in QUERY_COLUMNS]
    if unknown:
        warnings.append(f"{path}:1: unknown column(s) ignored: {', '.join(unknown)}")


def _relevant_entries(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return split_relevant(value)
    if isinstance(value, list) and all(isinstance(entry, str) for entry in value):
        return [entry.strip() for entry in value if entry.strip()]
    raise QuerySetError(f"{where}: relevant must be a `;`-separated string or a list of strings")


def _text_field(record: dict[str, object], key: str, where: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise QuerySetError(f"{where}: {key} must be a string, got {type(value).__name__}")
    return value.strip()


def _build(records: Iterable[tuple[str, dict[str, object]]], warnings: list[str]) -> QuerySet:
    queries: list[Query] = []
    first_seen: dict[tuple[str, str], str] = {}
    for where, record in records:
        text = _text_field(record, "query", where)
        if not text:
            raise QuerySetError(f"{where}: empty query")
        lang = _text_field(record, "lang", where)
        entries = _relevant_entries(record["relevant"], where)
        unique = list(dict.fromkeys(entries))
        if len(unique) < len(entries):
            warnings.append(f"{where}: {len(entries) - len(unique)} repeated relevant entries dropped")
        if not unique:
            warnings.append(f"{where}: query {text!r} has no relevant tile (it will score 0)")
        key = (text, lang)
        if key in first_seen:
            warnings.append(f"{where}: query {text!r} (lang {lang!r}) repeats {first_seen[key]}; dropped")
            continue
        first_seen[key] = where
        queries.append(Query(text, lang, tuple(unique), where))
    return QuerySet(tuple(queries), tuple(warnings))


def load_query_set(path: str | Path) -> QuerySet:
    """A query file: `.csv` with the columns query,lang,relevant, or `.jsonl` with those keys."""
    path = Path(path)
    warnings: list[str] = []
    suffix = path.suffix.lower()
    if suffix == ".csv":
        query_set = _build(_read_query_csv(path, warnings), warnings)
    elif suffix == ".jsonl":
        query_set = _build(_read_query_jsonl(path, warnings), warnings)
    else:
        raise QuerySetError(f"{path}: a query file must end in .csv or .jsonl")
    if not query_set.queries:
        raise QuerySetError(f"{path}: no queries")
    return query_set


def query_set_from_labels(
    path: str | Path,
    label_column: str | None = None,
    query_for_label: Callable[[str], str] = str,
    lang: str = "",
) -> QuerySet:
    """One query per label of a labels file, relevant = the `file` entries carrying that label.

    The label column is `label_column`, else whichever of `label` / `labels` the file has. Other columns
    (source_repo, source_path, ...) are expected in such files and ignored without a warning. The query text is
    `query_for_label(label)` (e.g. `prompts.eurosat_class_name`); labels mapping to the same text are merged,
    with a warning. Queries come in the order their label first appears; files in file order."""
    path = Path(path)
    warnings: list[str] = []
    relevant: dict[str, dict[str, None]] = {}  # query text -> files, an ordered set
    label_of_query: dict[str, str] = {}
    first_line_of_file: dict[str, int] = {}
    column: str | None = None
    for line_number, header, fields in _csv_rows(path):
        where = f"{path}:{line_number}"
        if column is None:
            column = _label_column(header, label_column, path)
        row = dict(zip(header, fields))
        file = row["file"].strip()
        if not file:
            raise QuerySetError(f"{where}: empty file entry")
        if file in first_line_of_file:
            warnings.append(f"{where}: file {file!r} repeats line {first_line_of_file[file]}; its labels are added")
        else:
            first_line_of_file[file] = line_number
        labels = split_relevant(row[column])
        if not labels:
            warnings.append(f"{where}: file {file!r} has no label; it is relevant to no query")
        for label in labels:
            text = query_for_label(label)
            if text in label_of_query and label_of_query[text] != label:
                warnings.append(
                    f"{where}: labels {label_of_query[text]!r} and {label!r} both give the query {text!r}; merged"
                )
            label_of_query.setdefault(text, label)
            relevant.setdefault(text, {})[file] = None
    if not relevant:
        raise QuerySetError(f"{path}: no labelled files")
    queries = tuple(
        Query(text, lang, tuple(files), f"{path} (label {label_of_query[text]!r})") for text, files in relevant.items()
    )
    return QuerySet(queries, tuple(warnings))


def _label_column(header: list[str], requested: str | None, path: Path) -> str:
    if "file" not in header:
        raise QuerySetError(f"{path}:1: no `file` column (have: {', '.join(header)})")
    if requested is not None:
        if requested not in header:
            raise QuerySetError(f"{path}:1: no column {requested!r} (have: {', '.join(header)})")
        return requested
    present = [name for name in ("label", "labels") if name in header]
    if len(present) != 1:
        raise QuerySetError(
            f"{path}:1: expected one of the columns label / labels (have: {', '.join(header)}); name the column"
        )
    return present[0]


def resolve(relevant: Iterable[str], lookup: Callable[[str], int | None]) -> Resolution:
    """Map relevant entries to tile ids with `lookup` (path or tile id -> id, None when unknown). Two entries
    naming the same tile give one id, so a tile is never counted twice as relevant."""
    ids: dict[int, None] = {}
    unknown: list[str] = []
    for entry in relevant:
        tile_id = lookup(entry)
        if tile_id is None:
            unknown.append(entry)
        else:
            ids[tile_id] = None
    return Resolution(tuple(ids), tuple(unknown))
