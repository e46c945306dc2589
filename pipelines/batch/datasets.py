"""Reading example partitions (landed or sampled) from HDFS, or any fsspec filesystem, as the
example dicts the trainers take (``sparse`` and ``dense`` as dicts, ``labels`` per task)."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow.parquet as pq


class NoData(RuntimeError):
    """A day the pipeline needs has no examples; the message says where it looked and what to do."""


def day_range(last: str, days: int) -> list[str]:
    """``days`` dates (YYYY-MM-DD) ending the day before ``last``, oldest first."""
    end = date.fromisoformat(last)
    return [(end - timedelta(days=n)).isoformat() for n in range(days, 0, -1)]


def parquet_files(fs, folder: str) -> list[str]:
    """Data files under ``folder`` (recursively); hidden, in-progress and marker files are not."""
    if not fs.exists(folder):
        return []
    return sorted(p for p in fs.find(folder) if not p.rsplit("/", 1)[-1].startswith(("_", ".")))


def _as_dict(value):
    return dict(value) if isinstance(value, list) else (value or {})


def read_days(fs, root: str, dates: list[str]) -> dict[str, list[dict]]:
    """date -> its examples under ``<root>/dt=<date>/`` (an empty list for a day with none)."""
    out = {}
    for day in dates:
        rows = []
        for path in parquet_files(fs, f"{root}/dt={day}"):
            with fs.open(path, "rb") as f:
                rows.extend(pq.read_table(f).to_pylist())
        for row in rows:
            row["sparse"], row["dense"] = _as_dict(row.get("sparse")), _as_dict(row.get("dense"))
        out[day] = rows
    return out


def landed_days(fs, root: str, dates: list[str]) -> dict[str, int]:
    """date -> number of data files landed for it (0: nothing), without reading them."""
    return {day: len(parquet_files(fs, f"{root}/dt={day}")) for day in dates}
