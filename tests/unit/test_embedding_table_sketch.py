"""Admission counts in snapshots: a restored table admits as the original would have, the
sketch part is verified like the rows, and snapshots without usable counts (version 1,
another sketch size) restore their rows with an empty sketch and a warning."""

import io
import zlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import rule
from test_table_properties import TableMachine

from paramserver.config import TableConfig
from paramserver.snapshot import SnapshotError
from paramserver.table import EmbeddingTable

SEEN_TWICE = np.array([77, 78], np.uint64)
ADMITTED = np.array([5], np.uint64)


def table(**kw) -> EmbeddingTable:
    kw = {"name": "t", "dim": 4, "admit_after": 3, "sketch_width": 4096, "sketch_depth": 4, **kw}
    return EmbeddingTable(TableConfig(**kw))


def counted_table() -> EmbeddingTable:
    """Two IDs seen twice (one sighting short of admission) and one admitted row."""
    t = table()
    for _ in range(3):
        t.lookup(ADMITTED, insert=True)
    for _ in range(2):
        t.lookup(SEEN_TWICE, insert=True)
    return t


def snapshot_of(t: EmbeddingTable) -> bytes:
    buf = io.BytesIO()
    t.snapshot(buf)
    return buf.getvalue()


def sketch_start(data: bytes) -> int:
    """Offset of the admission-sketch part: right after the rows' Arrow stream."""
    buf = io.BytesIO(data)
    pa.ipc.open_stream(buf).read_all()
    return buf.tell()


def as_version_1(data: bytes) -> bytes:
    """The rows part of a version 2 snapshot, closed by an end marker as version 1 wrote it."""
    reader = pa.ipc.open_stream(io.BytesIO(data))
    schema = reader.schema.with_metadata({**reader.schema.metadata, b"flywheel.version": b"1"})
    out, chained, total = io.BytesIO(), 0, 0
    with pa.ipc.new_stream(out, schema) as writer:
        for batch in reader.iter_batches_with_custom_metadata():
            writer.write_batch(pa.record_batch(batch.batch.columns, schema=schema),
                               custom_metadata=batch.custom_metadata)
            chained = zlib.crc32(int(batch.custom_metadata[b"crc32"]).to_bytes(4, "little"), chained)
            total += batch.batch.num_rows
        writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema),
                           custom_metadata={"end": "1", "total_rows": str(total), "crc32": str(chained)})
    return out.getvalue()


def admitted_after_one_more_sighting(t: EmbeddingTable) -> bool:
    return bool(t.lookup(SEEN_TWICE, insert=True).any(axis=1).all())


def test_ids_counted_before_a_snapshot_are_admitted_after_restore_as_without_the_restart():
    original = counted_table()
    restored = table()
    assert restored.restore(io.BytesIO(snapshot_of(original))) == 1
    assert restored.stats()["tracked_ids"] == original.stats()["tracked_ids"] == 3
    assert not restored.lookup(SEEN_TWICE).any(), "restored counts must not admit by themselves"
    np.testing.assert_array_equal(restored.lookup(SEEN_TWICE, insert=True), original.lookup(SEEN_TWICE, insert=True))
    assert restored.lookup(SEEN_TWICE).any(axis=1).all() and len(restored) == len(original) == 3


def test_version_1_snapshots_restore_their_rows_with_an_empty_sketch(caplog):
    data = as_version_1(snapshot_of(counted_table()))
    restored = table()
    assert restored.restore(io.BytesIO(data)) == 1
    assert restored.lookup(ADMITTED).any()
    assert "has no admission counts" in caplog.text and "admit_after=3" in caplog.text
    assert not admitted_after_one_more_sighting(restored)


def test_a_sketch_of_another_size_is_dropped_with_a_warning_and_rows_still_restore(caplog):
    data = snapshot_of(counted_table())
    resized = table(sketch_width=2048)
    assert resized.restore(io.BytesIO(data)) == 1
    assert "4096x4 admission sketch" in caplog.text and "sketch_width=4096, sketch_depth=4" in caplog.text
    assert resized.stats()["tracked_ids"] == 0 and not admitted_after_one_more_sighting(resized)


def test_a_table_without_admission_ignores_the_sketch_quietly(caplog):
    serving = table(admit_after=1)
    assert serving.restore(io.BytesIO(snapshot_of(counted_table()))) == 1
    assert serving.lookup(ADMITTED).any() and not caplog.records


@pytest.mark.parametrize("damage, message", [
    ("flip", "checksum mismatch in admission sketch batch 0"),
    ("truncate_in_sketch", "corrupt or truncated|truncated"),
    ("drop_sketch", "corrupt or truncated"),
    ("resize_header", "end marker says .* corrupt"),
])
def test_a_damaged_sketch_part_is_refused_and_changes_nothing(damage, message):
    good = snapshot_of(counted_table())
    start = sketch_start(good)
    data = bytearray(good)
    if damage == "flip":
        data[(start + len(good)) // 2] ^= 0x55  # inside the counters (64 KiB of them)
    elif damage == "truncate_in_sketch":
        data = data[: start + (len(good) - start) // 2]
    elif damage == "drop_sketch":
        data = data[:start]
    else:
        assert data.count(b"4096", start) == 1
        data[start:] = data[start:].replace(b"4096", b"2048")
    target = table()
    target.lookup(np.array([1234], np.uint64), insert=True)
    with pytest.raises(SnapshotError, match=message):
        target.restore(io.BytesIO(bytes(data)))
    assert len(target) == 0 and target.stats()["tracked_ids"] == 1, "a refused restore must leave the table as it was"


class RestoringMachine(TableMachine):
    """The table model's properties hold across snapshot + restore at any step."""

    @rule()
    def snapshot_and_restore(self):
        buf = io.BytesIO()
        self.table.snapshot(buf)
        buf.seek(0)
        self.table.restore(buf)
        self.model.restore()


TestRestoredTableMatchesModel = RestoringMachine.TestCase
TestRestoredTableMatchesModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                                  suppress_health_check=[HealthCheck.too_slow])
