"""The collisionless table: admission, initialisation, bad input, snapshots, memory reuse,
and behaviour under concurrent calls (which release the GIL)."""

import io
import threading

import numpy as np
import pytest
from table_model import apply_optimizer, fresh_slots

from paramserver.config import Adagrad, Ftrl, Sgd, TableConfig
from paramserver.snapshot import SnapshotError
from paramserver.table import EmbeddingTable


def table(**kw) -> EmbeddingTable:
    kw.setdefault("name", "t")
    kw.setdefault("dim", 8)
    return EmbeddingTable(TableConfig(**kw))


def test_distinct_ids_never_share_a_row():
    t = table(dim=4, initializer="zeros", optimizer=Sgd(learning_rate=1.0))
    ids = np.arange(1, 200_001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # spread over 64 bits
    t.lookup(ids, insert=True)
    marks = np.repeat(-np.arange(len(ids), dtype=np.float32)[:, None], 4, axis=1)
    t.apply_gradients(ids, marks)  # w = 0 - 1.0 * (-i) = i
    got = t.lookup(ids)
    assert len(t) == len(ids)
    np.testing.assert_array_equal(got[:, 0], np.arange(len(ids), dtype=np.float32))


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_admission_after_n_sightings(n):
    t = table(admit_after=n, initializer="uniform")
    x = np.array([77], np.uint64)
    for _ in range(n - 1):
        assert not t.lookup(x, insert=True).any(), "read a row before admission"
        assert t.apply_gradients(x, np.ones((1, 8), np.float32)) == 0
    assert not t.lookup(x, insert=False).any(), "serving lookups must not count toward admission"
    assert t.lookup(x, insert=True).any()
    stats = t.stats()
    assert stats["admitted"] == 1 and stats["dropped_gradients"] == n - 1
    assert stats["tracked_ids"] == (1 if n > 1 else 0)


def test_initialisation_is_deterministic_per_id_and_bounded():
    a = table(seed=3, init_scale=0.1).lookup(np.arange(1000, dtype=np.uint64), insert=True)
    b = table(seed=3, init_scale=0.1).lookup(np.arange(1000, dtype=np.uint64)[::-1], insert=True)[::-1]
    c = table(seed=4, init_scale=0.1).lookup(np.arange(1000, dtype=np.uint64), insert=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 0.1 and abs(a.mean()) < 0.01 and a.std() > 0.05


@pytest.mark.parametrize("opt", [Sgd(0.3), Adagrad(0.3), Ftrl(0.3, l1=0.05, l2=0.1, beta=1.0)])
def test_optimizer_matches_numpy_reference_over_steps(opt):
    cfg = TableConfig(name="o", dim=16, optimizer=opt, initializer="normal", init_scale=0.5)
    t = EmbeddingTable(cfg)
    ids = np.array([5, 9], np.uint64)
    w = t.lookup(ids, insert=True)
    ref = [np.concatenate([w[i], fresh_slots(cfg)]) for i in range(2)]
    rng = np.random.default_rng(0)
    for _ in range(25):
        g = rng.standard_normal((2, 16)).astype(np.float32)
        t.apply_gradients(ids, g)
        ref = [apply_optimizer(cfg, ref[i], g[i]) for i in range(2)]
    np.testing.assert_allclose(t.lookup(ids), np.stack([r[:16] for r in ref]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad_ids, error", [
    (np.array([1.0, 2.0]), "uint64 or int64"), (np.array([[1, 2]], np.uint64), "1-D"),
    (np.array([1, 2], np.int32), "uint64 or int64"),
])
def test_bad_ids_are_refused(bad_ids, error):
    with pytest.raises((TypeError, ValueError), match=error):
        table().lookup(bad_ids)


def test_bad_gradients_leave_the_table_unchanged():
    t = table(dim=4)
    ids = np.array([1, 2, 3], np.uint64)
    before = t.lookup(ids, insert=True).copy()
    delta_before = t.export_delta()
    grads = np.ones((3, 4), np.float32)
    grads[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"id 3 \(row 2, column 1\) is NaN or infinite"):
        t.apply_gradients(ids, grads)
    with pytest.raises(TypeError, match="float32"):
        t.apply_gradients(ids, np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(3, 4\).*dim 4.*\(3, 5\)"):
        t.apply_gradients(ids, np.ones((3, 5), np.float32))
    np.testing.assert_array_equal(t.lookup(ids), before)
    assert len(delta_before.ids) == 3 and len(t.export_delta().ids) == 0


def test_int64_ids_are_the_same_ids_as_uint64():
    t = table()
    a = t.lookup(np.array([-1, 5], np.int64), insert=True)
    b = t.lookup(np.array([2**64 - 1, 5], np.uint64))
    np.testing.assert_array_equal(a, b)


def test_eviction_frees_rows_for_reuse_and_reports_tombstones():
    t = table(dim=8, ttl_seconds=60)
    old = np.arange(0, 50_000, dtype=np.uint64)
    t.lookup(old, insert=True, now=1_000)
    t.export_delta()
    capacity = t.stats()["capacity_rows"]
    assert t.evict(now=1_060) == 0
    assert t.evict(now=1_061) == 50_000
    new = np.arange(100_000, 150_000, dtype=np.uint64)
    t.lookup(new, insert=True, now=1_061)
    stats = t.stats()
    assert stats["rows"] == 50_000 and stats["evicted"] == 50_000
    assert stats["capacity_rows"] == capacity, "evicted rows must be reused, not new memory"
    delta = t.export_delta()
    assert set(delta.tombstones.tolist()) == set(old.tolist())
    assert set(delta.ids.tolist()) == set(new.tolist())
    assert not t.lookup(old[:10]).any()


def test_snapshot_round_trip_keeps_rows_slots_and_times(tmp_path):
    t = table(dim=8, optimizer=Ftrl(), ttl_seconds=100)
    ids = np.arange(70_000, dtype=np.uint64)  # more than one snapshot batch
    t.lookup(ids, insert=True, now=500)
    t.apply_gradients(ids[::3], np.ones((len(ids[::3]), 8), np.float32), now=600)
    path = tmp_path / "t.arrow"
    assert t.snapshot(path) == 70_000
    back = table(dim=8, optimizer=Ftrl(), ttl_seconds=100)
    assert back.restore(path) == 70_000
    np.testing.assert_array_equal(back.lookup(ids), t.lookup(ids))
    # slots came back too: one more identical step gives identical rows
    for tab in (t, back):
        tab.apply_gradients(ids[:10], np.full((10, 8), 0.5, np.float32), now=650)
    np.testing.assert_array_equal(back.lookup(ids[:10]), t.lookup(ids[:10]))
    # update times came back: rows last touched at 500 expire at 700, those at 600/650 do not
    stale = set(ids.tolist()) - set(ids[::3].tolist()) - set(ids[:10].tolist())
    assert back.evict(now=700) == len(stale)


def test_corrupt_truncated_or_foreign_snapshots_are_refused_and_change_nothing(tmp_path):
    t = table(dim=4)
    ids = np.arange(1000, dtype=np.uint64)
    t.lookup(ids, insert=True)
    buf = io.BytesIO()
    t.snapshot(buf)
    good = buf.getvalue()
    target = table(dim=4)
    target.lookup(np.array([123456], np.uint64), insert=True)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x55
    cases = {"checksum mismatch|corrupt": bytes(flipped), "truncated": good[: len(good) - 200],
             "not a Flywheel|corrupt": b"PAR1" + b"\0" * 100}
    for message, data in cases.items():
        with pytest.raises(SnapshotError, match=message):
            target.restore(io.BytesIO(data))
    with pytest.raises(SnapshotError, match="dim 4.*cannot restore.*dim 8"):
        table(dim=8).restore(io.BytesIO(good))
    assert len(target) == 1, "a refused restore must leave the table as it was"


def test_concurrent_lookups_never_see_another_ids_row_during_evictions():
    t = table(dim=16, ttl_seconds=10, initializer="zeros")
    ids = np.arange(20_000, dtype=np.uint64)
    stop, errors = threading.Event(), []

    def owned_rows(x):  # every row holds its own id in every column
        return np.repeat(x.astype(np.float32)[:, None], 16, axis=1)

    t.import_rows(ids, owned_rows(ids), now=0)

    def reader():
        rng = np.random.default_rng()
        while not stop.is_set():
            x = rng.choice(ids, 16_384)
            got = t.lookup(x)
            ok = (got == 0).all(axis=1) | (got == owned_rows(x)).all(axis=1)
            if not ok.all():
                errors.append(got[~ok][:3])
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    for round_ in range(20):  # evict everything, then bring it back at a later time
        t.evict(now=100 * (round_ + 1))
        t.import_rows(ids, owned_rows(ids), now=100 * (round_ + 1))
    stop.set()
    for th in threads:
        th.join()
    assert not errors, f"a lookup returned a row of another id: {errors[0]}"


def test_no_update_is_lost_between_concurrent_exports():
    t = table(dim=2, optimizer=Sgd(learning_rate=1.0), initializer="zeros")
    ids = np.arange(5_000, dtype=np.uint64)
    t.lookup(ids, insert=True)
    replica: dict[int, np.ndarray] = {}
    done = threading.Event()

    def trainer():
        rng = np.random.default_rng(1)
        for _ in range(300):
            x = rng.choice(ids, 2_000)
            t.apply_gradients(x, -np.ones((len(x), 2), np.float32))  # each update adds 1 per occurrence
        done.set()

    def ship():
        delta = t.export_delta()
        for x, row in zip(delta.ids.tolist(), delta.rows):
            replica[x] = row

    th = threading.Thread(target=trainer)
    th.start()
    while not done.is_set():
        ship()
    th.join()
    ship()
    final = t.lookup(ids)
    assert final.sum() == 300 * 2_000 * 2
    mismatched = [x for x in ids.tolist() if not np.array_equal(replica.get(x), final[x])]
    assert not mismatched, f"{len(mismatched)} rows differ on the replica, e.g. id {mismatched[0]}"
