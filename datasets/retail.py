"""The retail adapter: the Taobao ``UserBehavior.csv`` log onto the data contract (datasets/contract.py).

The log (Alibaba, published on Tianchi) is implicit feedback, one action per line, no header::

    user_id,item_id,category_id,behavior_type,timestamp      # timestamp: unix seconds

Each line becomes the contract action of its ``behavior_type`` and the actions it implies
(:data:`STACKED`: a like is also a click, a finish also a click and a like), as a 5-star
MovieLens rating is a click, a like and a finish; lines carry no request ID, so a ``buy`` does
not join the earlier ``pv`` of the same item: it is a positive of its own for every task.

===============  ========  =====================================================
behavior_type    action    meaning
===============  ========  =====================================================
``pv``           click     the user opened the item's page
``fav``          like      the user added the item to their favourites
``cart``         like      the user put the item in their cart
``buy``          finish    the user bought the item
===============  ========  =====================================================

The original behaviour names are kept nowhere else. Items: ``attributes`` ``category=<id>``
(an item seen under several categories takes its most frequent one, the smallest ID on a tie),
``first_seen`` its earliest kept timestamp, ``title`` empty. Users: none (the log has no user
attributes). There is no request ID, so the history has no impressions.

Dropped lines, counted by reason (:data:`DROPPED`): ``unparsed`` (not five comma-separated
fields, or an ID or timestamp that is not an integer), ``unknown_behavior`` (not one of
:data:`ACTIONS`), ``bad_id`` (an ID outside the contract's range) and ``out_of_time`` (outside
``TIME_MIN..TIME_MAX``: the real log has a few). :func:`tables` logs one warning with the counts;
:func:`tables_and_dropped` returns them for a caller that reports them itself.

Example::

    from datasets import retail
    tables, dropped = retail.tables_and_dropped("UserBehavior/", limit=1_000_000)
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.contract import ID_MAX, TIME_MAX, TIME_MIN, Tables, finish

FILE = "UserBehavior.csv"
COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
DTYPES = {"user_id": np.int64, "item_id": np.int64, "category_id": np.int64, "behavior_type": "category",
          "timestamp": np.int64}
ACTIONS = {"pv": "click", "fav": "like", "cart": "like", "buy": "finish"}
STACKED = {"click": 0, "like": 1, "finish": 2}  # an action implies those before it: buy = click + like + finish
"""behavior_type -> the contract action (a name of datasets.contract.DEFAULT_ACTIONS)."""
DROPPED = ("unparsed", "unknown_behavior", "bad_id", "out_of_time")
CHUNK_LINES = 1_000_000  # lines parsed at a time when a file has malformed lines

log = logging.getLogger(__name__)


def is_retail(folder: str | Path) -> bool:
    """Whether ``folder`` holds a Taobao ``UserBehavior.csv``."""
    return (Path(folder) / FILE).is_file()


def tables(folder: str | Path, limit: int | None = None) -> Tables:
    """The contract tables of ``folder``'s UserBehavior.csv; dropped lines logged as one warning.

    Args:
      folder: holds ``UserBehavior.csv``.
      limit: read only the first ``limit`` lines (None: all; the real log has about 100M).

    Raises:
      FileNotFoundError: ``folder`` holds no UserBehavior.csv.
    """
    result, dropped = tables_and_dropped(folder, limit)
    if total := sum(dropped.values()):
        reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in dropped.items() if n)
        log.warning("%s: dropped %d of %d lines (%s); the other lines are read (datasets/retail.py says why)",
                    Path(folder) / FILE, total, total + int((result.interactions["action"] == "click").sum()), reasons)
    return result


def tables_and_dropped(folder: str | Path, limit: int | None = None) -> tuple[Tables, dict[str, int]]:
    """As :func:`tables`, silent, with the count of dropped lines per reason of :data:`DROPPED`."""
    path = Path(folder) / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass the folder holding the Taobao log "
                                f"({FILE}: user_id,item_id,category_id,behavior_type,timestamp, no header)")
    if limit is not None and limit < 0:
        raise ValueError(f"limit {limit}: expected a number of lines >= 0, or None for all")
    frame, unparsed = _read(path, limit)
    kept, dropped = _keep(frame)
    return finish(Tables(_items(kept), _users(), _interactions(kept))), {"unparsed": unparsed, **dropped}


def _read(path: Path, limit: int | None) -> tuple[pd.DataFrame, int]:
    """The typed log and the number of unparsed lines (a clean file is read in one typed pass)."""
    try:
        return pd.read_csv(path, header=None, names=COLUMNS, dtype=DTYPES, nrows=limit, index_col=False,
                           engine="c"), 0
    except (ValueError, OverflowError):  # pandas' ParserError is a ValueError
        return _read_lines(path, limit)


def _read_lines(path: Path, limit: int | None) -> tuple[pd.DataFrame, int]:
    """The slow path for a file with malformed lines: parse chunks of lines, count the bad ones."""
    frames, unparsed = [], 0
    with open(path, encoding="utf-8", errors="replace") as file:
        lines = itertools.islice(file, limit)
        while chunk := list(itertools.islice(lines, CHUNK_LINES)):
            frame, bad = _parse(pd.Series(chunk, dtype=object))
            frames.append(frame)
            unparsed += bad
    frames = [f for f in frames if len(f)] or [_parse(pd.Series([], dtype=object))[0]]
    return pd.concat(frames, ignore_index=True), unparsed


def _parse(lines: pd.Series) -> tuple[pd.DataFrame, int]:
    """Lines of text as the typed log, and how many (not counting blank ones) did not parse."""
    text = lines.str.strip()
    text = text[text != ""]
    fields = text.str.split(",", regex=False)
    ok = fields.str.len() == len(COLUMNS)
    parts = pd.DataFrame(fields[ok].tolist(), columns=COLUMNS, dtype=object) if ok.any() else \
        pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    parts = parts.apply(lambda column: column.str.strip())
    integer = np.ones(len(parts), dtype=bool)
    for column in ("user_id", "item_id", "category_id", "timestamp"):
        integer &= parts[column].str.fullmatch(r"-?\d{1,18}", na=False).to_numpy(dtype=bool)
    parts = parts[integer].reset_index(drop=True)
    typed = parts.astype({c: t for c, t in DTYPES.items() if c != "behavior_type"})
    typed["behavior_type"] = parts["behavior_type"].astype("category")
    return typed[COLUMNS], int(len(text) - len(typed))


def _keep(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The lines the contract takes, and the others counted by reason."""
    known = frame["behavior_type"].isin(list(ACTIONS)).to_numpy()
    ids = (frame["user_id"].between(0, ID_MAX["user_id"] - 1) & frame["item_id"].between(0, ID_MAX["item_id"] - 1))
    ids = ids.to_numpy()
    in_time = ((frame["timestamp"] >= TIME_MIN) & (frame["timestamp"] < TIME_MAX)).to_numpy()
    dropped = {"unknown_behavior": int((~known).sum()), "bad_id": int((known & ~ids).sum()),
               "out_of_time": int((known & ids & ~in_time).sum())}
    return frame[known & ids & in_time].reset_index(drop=True), dropped


def _items(kept: pd.DataFrame) -> pd.DataFrame:
    """One row per item (by ID): its most frequent category (smallest ID on a tie), its earliest timestamp."""
    pairs = kept.groupby(["item_id", "category_id"], sort=False)["timestamp"].agg(["size", "min"]).reset_index()
    item, category, n = (pairs[c].to_numpy() for c in ("item_id", "category_id", "size"))
    order = np.lexsort((category, -n, item))  # by item, then most frequent, then smallest category
    top = order[np.r_[True, item[order][1:] != item[order][:-1]]] if len(order) else order
    categories, which = np.unique(category[top], return_inverse=True)
    labels = np.array([f"category={c}" for c in categories] + [""], dtype=object)[which]
    first_seen = pairs.groupby("item_id", sort=True)["min"].min()  # sorted by item, as item[top] is
    return pd.DataFrame({"item_id": item[top].astype(np.int64), "attributes": labels,
                         "first_seen": first_seen.to_numpy(np.int64), "title": ""})


def _users() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series(dtype=np.int64), "attributes": pd.Series(dtype=object)})


def _interactions(kept: pd.DataFrame) -> pd.DataFrame:
    """One row per action: a line's action and the ones it implies (:data:`STACKED`), so a
    purchase is also a click and a like, as a 5-star MovieLens rating is (lines carry no
    request ID, so a buy never joins the earlier pv of the same item)."""
    behavior = kept["behavior_type"].astype("category")
    codes = behavior.cat.codes.to_numpy()
    users, items = kept["user_id"].to_numpy(np.int64), kept["item_id"].to_numpy(np.int64)
    times = kept["timestamp"].to_numpy(np.int64)
    parts = []
    for level, action in enumerate(("click", "like", "finish")):
        implied = np.array([STACKED.get(ACTIONS.get(str(b), ""), -1) >= level for b in behavior.cat.categories]
                           + [False])
        chosen = implied[codes]
        parts.append(pd.DataFrame({"user_id": users[chosen], "item_id": items[chosen], "action": action,
                                   "timestamp": times[chosen]}))
    return pd.concat(parts, ignore_index=True)
