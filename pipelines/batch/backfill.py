"""Backfill: an interaction history (the data contract, datasets/) -> landed example partitions on HDFS.

So the first ``daily_retrain`` has data before any live traffic, the history is written
exactly where the joiner lands examples (``joiner.examples_dir``), in the same Parquet schema
(``streaming.jobs.landing``), hourly partitions with ``_SUCCESS``::

    <examples_dir>/dt=YYYY-MM-DD/hour=HH/backfill.parquet

- Each ``(user, item, request)`` of the history is one example, labelled through
  ``data.actions``. A history with impressions gives its own negatives (shown, no positive
  action, as the joiner does live); one without (MovieLens) gets ``negatives`` items the user
  never engaged with per positive (all labels 0, ``sample_rate`` 1: down-sampling is the
  batch pipeline's job).
- Time is moved so the history ends on ``end_date`` (default: yesterday, UTC), and squeezed
  into ``days`` days when given (ml-100k spans 7 months; ``--days 14`` gives 14 busy days).
- Idempotent: a day it writes is replaced whole (written aside, then swapped in).

Run: ``flywheel import <folder> --days 14`` (checks the folder against the contract first).
"""

from __future__ import annotations

import io
import logging
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.history import Dataset, examples
from models.features import HISTORY
from streaming.schemas import SCHEMA_VERSION, TASKS

log = logging.getLogger(__name__)
MODEL_VERSION = "backfill"

LABELS = pa.struct([(t, pa.int32()) for t in TASKS])
RATES = pa.struct([(t, pa.float64()) for t in TASKS])
SCHEMA = pa.schema([
    ("schema_version", pa.int32()), ("request_id", pa.string()), ("user_id", pa.int64()), ("item_id", pa.int64()),
    ("event_time", pa.int64()), ("position", pa.int32()), ("model_version", pa.string()),
    ("sparse", pa.map_(pa.string(), pa.list_(pa.int64()))), ("dense", pa.map_(pa.string(), pa.float64())),
    ("labels", LABELS), ("sample_rate", pa.float64()), ("join_delay_ms", pa.int64()),
    ("is_correction", pa.bool_()), ("sample_rates", RATES),
])
"""The landed Example schema as the joiner's Flink SQL writes it (see streaming/jobs/landing.py)."""


def retime(ratings: pd.DataFrame, end_date: date, days: float | None) -> pd.DataFrame:
    """Events with ``time`` (unix s) moved to end on ``end_date`` 23:59:59 UTC, squeezed into
    ``days`` days when given; order and relative spacing are kept."""
    end = datetime(end_date.year, end_date.month, end_date.day, 23, 59, 59, tzinfo=timezone.utc).timestamp()
    first, last = ratings["time"].min(), ratings["time"].max()
    span = max(last - first, 1)
    scale = (days * 86400 - 1) / span if days else 1.0
    out = ratings.copy()
    out["time"] = (end - (last - ratings["time"]) * scale).astype(np.int64)
    return out


def example_rows(data: Dataset, end_date: date, days: float | None = None, negatives: int = 4,
                 seed: int = 0) -> pd.DataFrame:
    """Every event (and, without impressions, its sampled negatives) as landed-example rows,
    with ``dt`` and ``hour``."""
    events = retime(data.events, end_date, days)
    rows = pd.DataFrame(examples(data, events, negatives=negatives, history=HISTORY, seed=seed))
    rows["request_id"] = "bf-" + rows["request_id"].astype(str)
    rows["labels"] = [{t: int(labels.get(t, 0)) for t in TASKS} for labels in rows["labels"]]
    rows["sparse"] = [[(k, [int(i) for i in v]) for k, v in s.items()] for s in rows["sparse"]]
    rows["dense"] = [list(d.items()) for d in rows["dense"]]
    rows["schema_version"], rows["model_version"] = SCHEMA_VERSION, MODEL_VERSION
    rows["join_delay_ms"], rows["is_correction"], rows["sample_rates"] = 0, False, None
    when = pd.to_datetime(rows["event_time"], unit="ms", utc=True)
    rows["dt"], rows["hour"] = when.dt.strftime("%Y-%m-%d"), when.dt.strftime("%H")
    return rows


def write_partitions(fs, root: str, rows: pd.DataFrame) -> dict[str, int]:
    """Write ``rows`` under ``root`` as ``dt=/hour=`` Parquet with ``_SUCCESS``, replacing each day
    written; returns rows per day."""
    written = {}
    for dt, day in rows.groupby("dt", sort=True):
        staging = f"{root}/_staging/dt={dt}"
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        for hour, part in day.groupby("hour", sort=True):
            folder = f"{staging}/hour={hour}"
            fs.makedirs(folder, exist_ok=True)
            table = pa.Table.from_pandas(part[SCHEMA.names], schema=SCHEMA, preserve_index=False)
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            fs.pipe_file(f"{folder}/backfill.parquet", buffer.getvalue())
            fs.pipe_file(f"{folder}/_SUCCESS", b"")
        final = f"{root}/dt={dt}"
        if fs.exists(final):
            fs.rm(final, recursive=True)
        fs.mv(staging, final, recursive=True)
        written[str(dt)] = len(day)
    return written


def backfill(cfg, data_path: str, end_date: date | None = None, days: float | None = None,
             negatives: int = 4, seed: int = 0, data: Dataset | None = None) -> dict[str, int]:
    """Load a history (checked against the contract) and land it under ``joiner.examples_dir``;
    rows per day. ``data``: the history already loaded from ``data_path``."""
    from datasets import load
    from flywheel.hdfs import webhdfs

    if data is None and not str(data_path).strip():
        raise ValueError("no data folder given: pass a contract folder (docs/data.md) or a MovieLens release")
    if not cfg.joiner.examples_dir:
        raise ValueError("joiner.examples_dir is empty: the backfill lands where the joiner does; set it")
    end_date = end_date or (datetime.now(timezone.utc).date() - timedelta(days=1))
    data = data if data is not None else load(data_path, cfg.data.format, cfg.data.actions)
    rows = example_rows(data, end_date, days, negatives, seed)
    written = write_partitions(webhdfs(cfg), cfg.joiner.examples_dir.rstrip("/"), rows)
    log.info("backfilled %d examples into %d days ending %s", len(rows), len(written), end_date)
    return written
