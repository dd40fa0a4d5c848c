"""Records: the values ops file about frames, written to Parquet, one file per video, atomically.

Each row is one record: `input` (the video's URI), `frame` (its number in decode order), `pts`, `time`
(seconds), `op` (the op that wrote it), `frames` (for a clip record: how many frames it covers), then the
op's own values (numbers, strings, booleans, lists for vectors). A video's file sits beside its output
video: `clips/a.mp4` -> `clips/a.mp4.records.parquet`, and exists even when no op wrote anything (so "no
faces" and "not processed" differ). A long video's segments each write a part; the join renumbers
their frames and writes the video's file. `load_records` reads a whole job's records as one table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framefleet.errors import OpError, OptionError
from framefleet.files import storage
from framefleet.files.temporary import remove_stale_temporaries, temporary_path
from framefleet.jobs.directory import open_ledger

if TYPE_CHECKING:
    import pyarrow as pa
# pyarrow is imported where it is used: a job whose ops write no records (most) never loads it, which saves
# every worker and the `framefleet` command about 0.2 s of start-up

RECORDS_SUFFIX = ".records.parquet"
_FRAMES_KEY = b"framefleet.frames"
_CHUNK_ROWS = 4096


@cache
def _base_schema() -> pa.Schema:
    """framefleet's own columns, first in every records file."""
    import pyarrow as pa

    return pa.schema([("input", pa.string()), ("frame", pa.int64()), ("pts", pa.int64()), ("time", pa.float64()),
                      ("op", pa.string())])


def records_path(target: Path) -> Path:
    """The records file that goes with a video file (output, staging file or segment part)."""
    return target.with_name(target.name + RECORDS_SUFFIX)


def records_uri(output_uri: str) -> str:
    """The records file beside the output video `output_uri` (a path or an object-store URI)."""
    return output_uri + RECORDS_SUFFIX


class RecordsWriter:
    """Collects the records of one video (or segment) and writes them as one Parquet file on `close`,
    through a temporary name (readers see no file or the whole file). Memory stays bounded whatever the
    video's length: every `_CHUNK_ROWS` records go to a hidden shard file beside the target, and `close`
    streams the shards into the file."""

    def __init__(self, path: Path, *, input_uri: str, time_base: Fraction | None) -> None:
        self.path = path
        self.rows = 0
        self._input = input_uri
        self._time_base = float(time_base) if time_base is not None else None
        self._pending: list[dict[str, Any]] = []
        self._shards: list[Path] = []
        remove_stale_temporaries(path)

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Add records (from one batch: sorted here by frame, keeping the ops' order within a frame)."""
        self._pending.extend(sorted(records, key=lambda record: record["frame"]))
        self.rows += len(records)
        if len(self._pending) >= _CHUNK_ROWS:
            self._write_shard(self._take())

    def close(self, frames: int) -> Path:
        """Write the file; `frames` is how many frames were read (the join numbers segments with it)."""
        metadata = {_FRAMES_KEY: str(frames).encode()}
        last = self._take() if self._pending else None
        try:
            if not self._shards:
                table = last if last is not None else _base_schema().empty_table()
                write_table_atomically(table.replace_schema_metadata(metadata), self.path)
            else:
                if last is not None:
                    self._write_shard(last)
                _merge(self._shards, self.path, renumber=False, metadata=metadata)
        finally:
            for shard in self._shards:
                shard.unlink(missing_ok=True)
        return self.path

    def _write_shard(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        shard = self.path.with_name(f".{self.path.stem}.part-{os.getpid()}-{len(self._shards)}{self.path.suffix}")
        pq.write_table(table, shard)
        self._shards.append(shard)

    def _take(self) -> pa.Table:
        """The pending records as an Arrow table (framefleet's columns first, then the ops' in order seen)."""
        import pyarrow as pa

        rows, self._pending = self._pending, []
        columns: dict[str, list[Any]] = {"input": [self._input] * len(rows), "frame": [], "pts": [], "time": [],
                                         "op": []}
        for row in rows:
            for key in row:
                columns.setdefault(key, [])
        for key, values in columns.items():
            if key == "input":
                continue
            if key == "time":
                values.extend(None if self._time_base is None else row["pts"] * self._time_base for row in rows)
            else:
                values.extend(row.get(key) for row in rows)
        try:
            return pa.table({key: pa.array(values) for key, values in columns.items()})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise OpError(f"records: values of one column must share a type ({exc})") from None


def join_records(parts: Sequence[Path], target: Path) -> int:
    """Write the records of a video's segment parts, in order, as its one file; frame numbers continue
    from segment to segment. Streams one part at a time. Returns the number of rows."""
    import pyarrow.parquet as pq

    remove_stale_temporaries(target)
    frames = sum(_frames_of(pq.read_schema(part)) for part in parts)
    return _merge(parts, target, renumber=True, metadata={_FRAMES_KEY: str(frames).encode()})


def records_frames(path: Path) -> int:
    """How many frames a records file covers (kept in its metadata)."""
    import pyarrow.parquet as pq

    return _frames_of(pq.read_schema(path))


def _merge(parts: Sequence[Path], target: Path, *, renumber: bool, metadata: dict[bytes, bytes]) -> int:
    """Stream Parquet `parts` into `target` (atomically) under one schema: their columns unified, missing
    ones as nulls. `renumber` offsets each part's frame numbers by the frames of the parts before it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(part) for part in parts]
    try:
        schema = pa.unify_schemas([_base_schema(), *(s.remove_metadata() for s in schemas)],
                                  promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise OpError(f"records: values of one column must share a type ({exc})") from None
    staging = temporary_path(target)
    rows = offset = 0
    try:
        with pq.ParquetWriter(staging, schema.with_metadata(metadata)) as writer:
            for part, part_schema in zip(parts, schemas):
                table = pq.read_table(part)
                if renumber:
                    table = table.set_column(table.schema.get_field_index("frame"), "frame",
                                             pc.add(table["frame"], offset))
                    offset += _frames_of(part_schema)
                writer.write_table(_conform(table, schema))
                rows += table.num_rows
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return rows


def _frames_of(schema: pa.Schema) -> int:
    """The frame count a records file notes in its metadata."""
    return int((schema.metadata or {}).get(_FRAMES_KEY, b"0"))


def summarize(table: pa.Table) -> dict[str, Any]:
    """Rows, videos, rows per op and the columns of a records table (what `framefleet records` prints)."""
    ops: dict[str, int] = {}
    for op in table["op"].to_pylist():
        ops[op] = ops.get(op, 0) + 1
    return {"rows": table.num_rows, "videos": len(set(table["input"].to_pylist())), "ops": ops,
            "columns": {field.name: str(field.type) for field in table.schema}}


def load_records(job: str | os.PathLike[str]) -> pa.Table:
    """All records of a job's finished videos as one table (`job`: its directory, or its output root).

    Columns missing from some videos' files are filled with nulls."""
    import pyarrow as pa

    with open_ledger(str(job)) as ledger:
        items = ledger.items("done")
    uris = [records_uri(item.output_uri) for item in items]
    if uris and not _exists(uris[0]):
        raise OptionError(f"{job}: {uris[0]} does not exist: this job's pipeline writes no records")
    tables = [read_records(uri) for uri in uris]
    if not tables:
        return _base_schema().empty_table()
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")


def _exists(uri: str) -> bool:
    if storage.is_local(uri):
        return storage.local_path(uri).exists()
    fs, path = storage.filesystem(uri)
    return fs.exists(path)


def read_records(uri: str) -> pa.Table:
    """One records file (a path or an object-store URI)."""
    import pyarrow.parquet as pq

    if storage.is_local(uri):
        try:
            return pq.read_table(storage.local_path(uri))
        except FileNotFoundError:
            raise OptionError(f"{uri}: missing: the records of a finished video were moved or deleted") from None
    fs, path = storage.filesystem(uri)
    try:
        with fs.open(path, "rb") as handle:
            return pq.read_table(handle)
    except Exception as exc:  # noqa: BLE001 - the store's error, made one line without secrets
        raise storage.storage_error(exc, "read", uri) from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order: missing ones as nulls, types promoted."""
    import pyarrow as pa

    columns = [table[name].cast(field.type) if name in table.column_names else pa.nulls(table.num_rows, field.type)
               for name, field in zip(schema.names, schema)]
    return pa.Table.from_arrays(columns, schema=schema)


def write_table_atomically(table: pa.Table, target: Path) -> None:
    """Write `table` as the Parquet file `target` through its temporary name."""
    import pyarrow.parquet as pq

    staging = temporary_path(target)
    try:
        pq.write_table(table, staging)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
