"""The data contract: the three tables any team's history is brought to, and their checks.

A contract folder holds one file per table, CSV (``<table>.csv``, a header row) or Parquet
(``<table>.parquet``):

============  ========  ==========================================================================
table         required  columns
============  ========  ==========================================================================
items         yes       ``item_id`` (integer, 0 <= id < 2**62, unique); ``attributes`` (optional: ``|``-separated
                        tokens such as ``genre=Comedy|year=1995``); ``first_seen`` (optional: unix
                        seconds the item appeared; default its first interaction); ``title``
                        (optional)
users         no        ``user_id`` (integer, 0 <= id < 10**12, unique); ``attributes`` (as for items)
interactions  yes       ``user_id``; ``item_id`` (in items); ``action`` (a name the config's
                        ``data.actions`` maps to tasks); ``timestamp`` (unix seconds);
                        ``request_id`` (optional: the impression or request the action answers);
                        ``position`` (optional: the item's slot in that request, integer >= 0)
============  ========  ==========================================================================

An action mapped to no task (``impression``, ``skip``) records that the item was shown; the
actions on one ``(user_id, item_id, request_id)`` become one example (see
:mod:`datasets.history`). :func:`read` checks everything and raises one :class:`ContractError`
listing every problem found (file, row, column, what to do), up to :data:`MAX_PROBLEMS`.

Example::

    from datasets.contract import read
    tables = read("my-history/", actions={"view": [], "buy": ["click", "finish"]})
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("items", "users", "interactions")
REQUIRED = {"items": ["item_id"], "users": ["user_id"],
            "interactions": ["user_id", "item_id", "action", "timestamp"]}
OPTIONAL = {"items": ["attributes", "first_seen", "title"], "users": ["attributes"],
            "interactions": ["request_id", "position"]}
INTEGER = {"item_id", "user_id", "timestamp", "first_seen", "position"}
BLANK = {"position": 0, "first_seen": -1}  # an empty cell of these optional columns: its default (-1: filled later)
ID_MAX = {"item_id": 2**62, "user_id": 10**12}  # user IDs from 10**12 up are the demo's, chaos's and probes' own
TIME_MIN = 631_152_000  # 1990-01-01T00:00Z, unix seconds
TIME_MAX = 4_102_444_800  # 2100-01-01T00:00Z: a milliseconds value is refused, not misread
MAX_PROBLEMS = 20  # listed in a ContractError; the rest are counted
DEFAULT_ACTIONS: dict[str, list[str]] = {
    "impression": [], "skip": [], "click": ["click"], "like": ["like"], "finish": ["finish"], "share": ["share"]}
"""Action name -> the tasks it is a positive for (``data.actions`` in the config)."""


def known_actions(actions: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The action map in force: :data:`DEFAULT_ACTIONS`, then ``actions`` (``data.actions``)
    adding names or remapping them; the default names stay known, so the adapters and the
    default data read under any team's map."""
    return {**DEFAULT_ACTIONS, **(actions or {})}


class ContractError(ValueError):
    """A folder does not meet the contract; ``problems`` lists each (file, row, column, fix)."""

    def __init__(self, folder: Path, problems: list[str], total: int | None = None):
        self.folder, self.problems = folder, problems
        total = total if total is not None else len(problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(f"{folder} does not meet the data contract ({total} problem{'s' * (total != 1)}; "
                         "docs/data.md describes it):\n  " + "\n  ".join(problems) + more)


@dataclass
class Tables:
    """The contract's tables as DataFrames with typed columns (every optional column present)."""

    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame


class _Problems:
    def __init__(self):
        self.listed: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.listed) < MAX_PROBLEMS:
            self.listed.append(message)

    def rows(self, where: str, frame: pd.DataFrame, bad: np.ndarray, column: str, what: str) -> None:
        """One problem per row flagged in ``bad`` (a boolean mask over ``frame``)."""
        for n in np.flatnonzero(bad)[:MAX_PROBLEMS]:
            value = frame[column].iloc[n] if column in frame else ""
            value = value.item() if isinstance(value, np.generic) else value
            self.add(f"{where} {_row_label(where, int(n))}, column {column}: {value!r} {what}")
        self.total += max(0, int(bad.sum()) - MAX_PROBLEMS)


def _row_label(where: str, n: int) -> str:
    """CSV: the line in the file (the header is line 1); Parquet: the row, from 1."""
    return f"line {n + 2}" if where.endswith(".csv") else f"row {n + 1}"


def find(folder: Path, table: str) -> Path | None:
    """The file holding ``table`` in ``folder`` (CSV or Parquet), or None."""
    found = [p for p in (folder / f"{table}.csv", folder / f"{table}.parquet") if p.exists()]
    if len(found) > 1:
        raise ContractError(folder, [f"both {found[0].name} and {found[1].name} exist: keep one"])
    return found[0] if found else None


def is_contract(folder: str | Path) -> bool:
    folder = Path(folder)
    return find(folder, "items") is not None and find(folder, "interactions") is not None


def _read_file(path: Path) -> pd.DataFrame:
    """The file's rows as read; raises :class:`ContractError` naming it when it cannot be read."""
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many kinds; each is this one problem
        kind = "CSV with a header row" if path.suffix == ".csv" else "Parquet"
        raise ContractError(path.parent, [f"{path.name} cannot be read as {kind} ({type(exc).__name__}: "
                                          f"{str(exc)[:200]}): rewrite it, or remove it if empty"]) from None


def read(folder: str | Path, actions: dict[str, list[str]] | None = None) -> Tables:
    """Read and check a contract folder.

    Args:
      folder: holds ``items`` and ``interactions`` (and optionally ``users``), CSV or Parquet.
      actions: action name -> tasks (default :data:`DEFAULT_ACTIONS`); any other name is refused.

    Raises:
      ContractError: every problem found, each with its file, row, column and what to do.
    """
    folder = Path(folder)
    problems, frames, names = _Problems(), {}, {}
    for table in TABLES:
        path = find(folder, table)
        if path is None:
            if table != "users":
                problems.add(f"{table}.csv (or {table}.parquet) is missing: every history needs "
                             f"{table} with columns {', '.join(REQUIRED[table])}")
            frames[table] = pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED[table]})
            names[table] = f"{table}.csv"
            continue
        frames[table], names[table] = _read_file(path), path.name
    if problems.total:
        raise ContractError(folder, problems.listed, problems.total)
    return _checked(folder, names, frames, actions)


def check(tables: Tables, source: str, actions: dict[str, list[str]] | None = None) -> Tables:
    """Check tables an adapter made (``source`` names it in errors), as :func:`read` checks files."""
    frames = {t: getattr(tables, t) for t in TABLES}
    return _checked(Path(source), {t: f"{t} (from {source})" for t in TABLES}, frames, actions)


def _checked(folder: Path, names: dict[str, str], frames: dict[str, pd.DataFrame],
             actions: dict[str, list[str]] | None) -> Tables:
    problems = _Problems()
    tables = {t: check_table(names[t], frames[t], t, problems) for t in TABLES}
    if problems.total:
        raise ContractError(folder, problems.listed, problems.total)
    for table in ("items", "interactions"):
        if tables[table].empty:
            problems.add(f"{names[table]} holds no rows: a history needs at least one item and one interaction")
    _check_references(names, tables, known_actions(actions), problems)
    if problems.total:
        raise ContractError(folder, problems.listed, problems.total)
    return finish(Tables(**tables))


def check_table(name: str, frame: pd.DataFrame, table: str, problems: _Problems) -> pd.DataFrame:
    """``frame`` with typed columns and every optional column; problems of columns and types added."""
    missing = [c for c in REQUIRED[table] if c not in frame.columns]
    for column in missing:
        problems.add(f"{name}: column {column} is missing (columns found: {', '.join(map(str, frame.columns)) or 'none'}); "
                     f"{table} needs {', '.join(REQUIRED[table])}")
    if missing:
        return frame
    out = pd.DataFrame(index=frame.index)
    for column in REQUIRED[table] + OPTIONAL[table]:
        if column not in frame.columns:
            continue
        if column in INTEGER:
            out[column] = _integers(name, frame, column, problems)
        else:
            out[column] = frame[column].astype(str).where(frame[column].notna(), "")
    if problems.total:
        return out
    for column in ("item_id", "user_id"):
        if column in out:
            bad = (out[column] < 0) | (out[column] >= ID_MAX[column])
            problems.rows(name, frame, bad.to_numpy(), column, f"is outside 0..{ID_MAX[column]:.0e}: use non-negative "
                          "integer IDs (map string IDs to integers first)")
    for column in ("timestamp", "first_seen"):
        if column in out:
            early = (out[column] < TIME_MIN) & (out[column] != BLANK.get(column))
            problems.rows(name, frame, early.to_numpy(), column, "is outside 1990..2100 in unix seconds: fix the clock "
                          "or drop the row")
            problems.rows(name, frame, (out[column] >= TIME_MAX).to_numpy(), column,
                          "is outside 1990..2100 in unix seconds (milliseconds? divide by 1000)")
    if "position" in out:
        problems.rows(name, frame, (out["position"] < 0).to_numpy(), "position", "is negative: positions count from 0")
    key = {"items": "item_id", "users": "user_id"}.get(table)
    if key:
        duplicated = out[key].duplicated(keep="first").to_numpy()
        for n in np.flatnonzero(duplicated)[:MAX_PROBLEMS]:
            first = int(np.flatnonzero(out[key].to_numpy() == out[key].iloc[n])[0])
            problems.add(f"{name} {_row_label(name, int(n))}, column {key}: {int(out[key].iloc[n])} repeats "
                         f"{_row_label(name, first)}: each {key} appears once; merge the two rows")
        problems.total += max(0, int(duplicated.sum()) - MAX_PROBLEMS)
    return out


def _integers(name: str, frame: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    raw = frame[column]
    if pd.api.types.is_integer_dtype(raw.dtype) and not raw.isna().any():
        return raw.astype(np.int64)
    text = raw.astype(str).str.strip()
    if column in BLANK:
        text = text.mask(raw.isna() | (text == "") | (text == "None") | (text == "<NA>"), str(BLANK[column]))
    text = text.str.replace(r"\.0*$", "", regex=True)  # 17.0 from a float column is 17; exact beyond 2**53
    whole = text.str.fullmatch(r"-?\d{1,19}").fillna(False).astype(bool)
    digits = text.str.lstrip("-")
    huge = whole & (digits.str.len() == 19) & (digits > str(2**63 - 1))  # same length: text order is number order
    if not whole.all() or huge.any():
        unit = " (unix seconds)" if column in ("timestamp", "first_seen") else ""
        problems.rows(name, frame, (~whole).to_numpy(), column, f"is not an integer{unit}: fix the value or drop the row")
        problems.rows(name, frame, huge.to_numpy(), column, "is beyond 64 bits: use smaller integers")
        return pd.Series(0, index=frame.index, dtype=np.int64)
    return text.astype(np.int64)


def _check_references(names: dict[str, str], tables: dict[str, pd.DataFrame], actions: dict[str, list[str]],
                      problems: _Problems) -> None:
    where, interactions = names["interactions"], tables["interactions"]
    unknown = ~interactions["action"].isin(list(actions)).to_numpy()
    problems.rows(where, interactions, unknown, "action",
                  f"is not a known action ({', '.join(actions)}): map it to tasks in the config's data.actions, "
                  "or rename it")
    known_items = interactions["item_id"].isin(tables["items"]["item_id"]).to_numpy()
    problems.rows(where, interactions, ~known_items, "item_id", f"is not in {names['items']}: add the item there")


def finish(tables: Tables) -> Tables:
    """Fill the optional columns with their documented defaults; interactions in time order."""
    items, users, interactions = tables.items.copy(), tables.users.copy(), tables.interactions.copy()
    for frame, column in ((items, "attributes"), (items, "title"), (users, "attributes"), (interactions, "request_id")):
        if column not in frame:
            frame[column] = ""
    if "position" not in interactions:
        interactions["position"] = 0
    first = interactions.groupby("item_id")["timestamp"].min()
    seen = items["item_id"].map(first)
    if "first_seen" not in items:
        items["first_seen"] = -1
    blank = items["first_seen"] == -1
    items.loc[blank, "first_seen"] = seen[blank].fillna(TIME_MIN).astype(np.int64)
    interactions = interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return Tables(items.reset_index(drop=True), users.reset_index(drop=True), interactions)


def write(tables: Tables, folder: str | Path, fmt: str = "parquet") -> Path:
    """Write ``tables`` as a contract folder (``fmt``: parquet or csv); returns the folder."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format {fmt!r}: expected parquet or csv")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        frame = getattr(tables, table)
        for stale in (folder / f"{table}.csv", folder / f"{table}.parquet"):
            stale.unlink(missing_ok=True)
        if table == "users" and frame.empty:
            continue
        if fmt == "csv":
            frame.to_csv(folder / f"{table}.csv", index=False)
        else:
            frame.to_parquet(folder / f"{table}.parquet", index=False)
    return folder
