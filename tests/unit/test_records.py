"""Records files: written in bounded memory (shards merged on close), columns unified, segment parts
joined with continuous frame numbers, all through temporary names."""

from __future__ import annotations

from fractions import Fraction

import pyarrow.parquet as pq
import pytest

from framefleet.errors import OpError
from framefleet.jobs import records
from framefleet.jobs.records import RecordsWriter, join_records, records_path


def rows(first: int, count: int, **values) -> list[dict]:
    return [{"frame": n, "pts": n * 512, "op": "test", **values} for n in range(first, first + count)]


def hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_long_run_of_records_goes_through_shards_and_ends_as_one_file(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "_CHUNK_ROWS", 10)
    target = tmp_path / "a.mp4.records.parquet"
    writer = RecordsWriter(target, input_uri="/in/a.mp4", time_base=Fraction(1, 12800))
    writer.write(rows(0, 12, score=0.5))
    writer.write(rows(12, 12, vector=[1.0, 2.0]))  # a column the first shard lacks
    assert len(hidden(tmp_path)) == 2 and not target.exists()  # memory holds under 10 rows at a time
    writer.write(rows(24, 3, score=0.25))
    writer.close(frames=40)

    assert hidden(tmp_path) == [] and writer.rows == 27
    table = pq.read_table(target)
    assert table["frame"].to_pylist() == list(range(27))
    assert table.column_names[:5] == ["input", "frame", "pts", "time", "op"]
    assert table["score"].to_pylist() == [0.5] * 12 + [None] * 12 + [0.25] * 3
    assert table["vector"].to_pylist()[12] == [1.0, 2.0] and table["vector"].to_pylist()[0] is None
    assert table["time"].to_pylist()[2] == pytest.approx(2 * 512 / 12800)
    assert pq.read_schema(target).metadata[b"framefleet.frames"] == b"40"


def test_a_video_without_records_still_gets_its_file(tmp_path):
    target = tmp_path / "b.mp4.records.parquet"
    RecordsWriter(target, input_uri="/in/b.mp4", time_base=None).close(frames=7)
    table = pq.read_table(target)
    assert table.num_rows == 0 and table.column_names == ["input", "frame", "pts", "time", "op"]


def test_segment_parts_join_with_continuous_frame_numbers(tmp_path):
    parts = []
    for seq, (count, frames) in enumerate([(3, 10), (0, 8), (2, 5)]):
        part = records_path(tmp_path / f"{seq:05d}.nut")
        writer = RecordsWriter(part, input_uri="/in/c.mkv", time_base=Fraction(1, 1000))
        writer.write(rows(0, count, label=f"s{seq}"))
        writer.close(frames=frames)
        parts.append(part)
    target = tmp_path / "c.mkv.records.parquet"
    assert join_records(parts, target) == 5
    table = pq.read_table(target)
    assert table["frame"].to_pylist() == [0, 1, 2, 18, 19]
    assert table["label"].to_pylist() == ["s0", "s0", "s0", "s2", "s2"]
    assert pq.read_schema(target).metadata[b"framefleet.frames"] == b"23"
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("chunk", [100, 1], ids=["in one chunk", "across shards"])
def test_values_of_one_column_must_share_a_type(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(records, "_CHUNK_ROWS", chunk)
    writer = RecordsWriter(tmp_path / "d.records.parquet", input_uri="/in/d.mp4", time_base=None)
    with pytest.raises(OpError, match="values of one column must share a type"):
        writer.write(rows(0, 1, value=1.5))
        writer.write(rows(1, 1, value="high"))
        writer.close(frames=2)
    assert hidden(tmp_path) == []
