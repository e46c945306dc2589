"""Snapshot retention (paramserver.snapshots.prune) on fsspec's in-memory filesystem."""

import calendar
import time
import uuid

import fsspec
import pytest

from paramserver.snapshots import COMPLETE, latest, prune, taken_at

NOW = calendar.timegm((2026, 11, 24, 12, 0, 0))
HOUR, DAY = 3600, 86_400


def sid(age_s: float) -> str:
    """A snapshot id taken ``age_s`` seconds before NOW."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW - age_s)) + "-" + uuid.uuid4().hex[:6]


@pytest.fixture
def store():
    """(fs, root): a fresh folder on the process-wide memory filesystem, removed afterwards."""
    fs, root = fsspec.filesystem("memory"), f"/snapshots-{uuid.uuid4().hex[:8]}"
    fs.makedirs(root)
    yield fs, root
    fs.rm(root, recursive=True)


def make(fs, root: str, snapshot_id: str, complete: bool = True) -> str:
    fs.pipe(f"{root}/{snapshot_id}/shard-0/item_id.arrow", b"rows")
    if complete:
        fs.pipe(f"{root}/{snapshot_id}/{COMPLETE}", b"{}")
    return snapshot_id


def remaining(fs, root: str) -> set[str]:
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}


def test_taken_at_reads_the_id_and_refuses_other_names():
    assert taken_at("20261124T120000Z-3fa9c1") == NOW
    assert taken_at("notes") is None
    assert taken_at("2026-11-24") is None


def test_deletes_only_what_is_both_beyond_keep_and_older_than_max_age(store):
    fs, root = store
    hourly = [make(fs, root, sid(h * HOUR)) for h in range(0, 24 * 10, 6)]  # 40 snapshots over 10 days

    deleted = prune(fs, root, keep=5, max_age_days=7, protect=set(), now=NOW)

    assert deleted == sorted(i for i in hourly if NOW - taken_at(i) > 7 * DAY)
    assert remaining(fs, root) == set(hourly) - set(deleted)
    assert len(remaining(fs, root)) == 29  # ages 0..7 days in 6 h steps


def test_keep_wins_over_age(store):
    fs, root = store
    old = [make(fs, root, sid(d * DAY)) for d in (30, 31, 32, 33)]

    deleted = prune(fs, root, keep=3, max_age_days=7, protect=set(), now=NOW)

    assert deleted == [old[3]]
    assert remaining(fs, root) == set(old[:3])


def test_age_wins_over_keep(store):
    fs, root = store
    recent = [make(fs, root, sid(h * HOUR)) for h in range(1, 11)]

    assert prune(fs, root, keep=2, max_age_days=1, protect=set(), now=NOW) == []
    assert remaining(fs, root) == set(recent)


def test_newest_complete_survives_even_when_old(store):
    fs, root = store
    newest = make(fs, root, sid(40 * DAY))
    make(fs, root, sid(50 * DAY))
    in_progress = make(fs, root, sid(HOUR), complete=False)

    prune(fs, root, keep=1, max_age_days=7, protect=set(), now=NOW)

    assert remaining(fs, root) == {newest, in_progress}
    assert latest(fs, root) == newest


def test_protected_ids_survive(store):
    fs, root = store
    lineage = make(fs, root, sid(20 * DAY))
    old = make(fs, root, sid(21 * DAY))
    stale_but_protected = make(fs, root, sid(3 * DAY), complete=False)
    make(fs, root, sid(0))

    deleted = prune(fs, root, keep=1, max_age_days=7, protect={lineage, stale_but_protected}, now=NOW)

    assert deleted == [old]
    assert {lineage, stale_but_protected} <= remaining(fs, root)


def test_incomplete_folders_go_only_after_a_day(store):
    fs, root = store
    make(fs, root, sid(0))
    writing = make(fs, root, sid(23 * HOUR), complete=False)
    failed = make(fs, root, sid(25 * HOUR), complete=False)

    assert prune(fs, root, keep=24, max_age_days=7, protect=set(), now=NOW) == [failed]
    assert writing in remaining(fs, root)


def test_folders_that_are_not_snapshots_are_left_alone(store):
    fs, root = store
    fs.pipe(f"{root}/README/notes.txt", b"keep me")
    make(fs, root, sid(0))
    make(fs, root, sid(30 * DAY))

    prune(fs, root, keep=1, max_age_days=7, protect=set(), now=NOW)

    assert "README" in remaining(fs, root)
    assert len(remaining(fs, root)) == 2


def test_a_deleted_snapshot_leaves_nothing_behind(store):
    fs, root = store
    make(fs, root, sid(0))
    gone = make(fs, root, sid(30 * DAY))

    assert prune(fs, root, keep=1, max_age_days=7, protect=set(), now=NOW) == [gone]
    assert not fs.exists(f"{root}/{gone}")
    assert not [path for path in fs.find(root) if gone in path]


def test_missing_root_and_bad_keep(store):
    fs, root = store
    assert prune(fs, f"{root}/nothing-here", keep=3, max_age_days=1, protect=set(), now=NOW) == []
    with pytest.raises(ValueError, match="keep >= 1"):
        prune(fs, root, keep=0, max_age_days=1, protect=set(), now=NOW)


def test_a_complete_snapshot_loses_its_manifest_before_its_files(store):
    fs, root = store
    make(fs, root, sid(0))
    gone = make(fs, root, sid(30 * DAY))
    removed = []

    class Recording:
        """The memory filesystem, noting every rm (a reader between two rms sees an incomplete snapshot)."""

        def __getattr__(self, name):
            return getattr(fs, name)

        def rm(self, path, recursive=False):
            removed.append(path)
            fs.rm(path, recursive=recursive)

    prune(Recording(), root, keep=1, max_age_days=7, protect=set(), now=NOW)

    assert removed == [f"{root}/{gone}/{COMPLETE}", f"{root}/{gone}"]
