"""The retail adapter (datasets/retail.py) on small UserBehavior.csv logs written here: the
behaviour -> action mapping, item attributes and first_seen, dropped lines counted by reason,
and the result written and read back through the contract."""

import logging

import numpy as np
import pandas as pd
import pytest

import datasets
from datasets import contract, retail

T0 = 1_511_539_200  # 2017-11-25T00:00Z, unix s: the real log's first day

CLEAN = [  # user, item, category, behaviour, timestamp
    (1, 100, 7, "pv", T0 + 10),
    (1, 100, 7, "buy", T0 + 50),
    (2, 100, 8, "fav", T0 + 5),  # item 100: category 7 twice, 8 once; first seen at T0 + 5
    (2, 200, 9, "cart", T0 + 20),
    (3, 300, 5, "pv", T0 + 31),
    (3, 300, 4, "pv", T0 + 30),  # item 300: a tie between 4 and 5, the smaller wins
]
DROPPED = [
    (4, 400, 1, "pv", 100),  # 1970: out of time
    (4, 400, 1, "pv", (T0 + 1) * 1000),  # milliseconds: out of time
    (5, 100, 7, "share", T0),  # not a Taobao behaviour
    (-1, 100, 7, "pv", T0),  # negative user ID
]
MALFORMED = ["abc,100,7,pv,1511539200", "1,100,7,pv", "1,100,7,pv,1511539200,9", "1,100,7,pv,1.5e9", ""]


def write_log(folder, rows, extra_lines=()):
    lines = [",".join(map(str, row)) for row in rows] + list(extra_lines)
    (folder / retail.FILE).write_text("".join(line + "\n" for line in lines))
    return folder


def interactions(tables):
    return sorted(map(tuple, tables.interactions[["user_id", "item_id", "action", "timestamp"]].to_numpy().tolist()))


@pytest.mark.parametrize("malformed", [(), MALFORMED], ids=["typed-pass", "line-by-line"])
def test_behaviours_map_to_contract_actions_and_bad_lines_are_counted(tmp_path, malformed):
    tables, dropped = retail.tables_and_dropped(write_log(tmp_path, CLEAN + DROPPED, malformed))
    assert interactions(tables) == sorted([  # each line's action and the ones it implies: buy = click + like + finish
        (1, 100, "click", T0 + 10), (1, 100, "click", T0 + 50), (1, 100, "like", T0 + 50), (1, 100, "finish", T0 + 50),
        (2, 100, "click", T0 + 5), (2, 100, "like", T0 + 5), (2, 200, "click", T0 + 20), (2, 200, "like", T0 + 20),
        (3, 300, "click", T0 + 31), (3, 300, "click", T0 + 30)])
    assert tables.interactions["timestamp"].is_monotonic_increasing
    assert dropped == {"unparsed": 4 if malformed else 0, "unknown_behavior": 1, "bad_id": 1, "out_of_time": 2}
    assert tables.users.empty and list(tables.users.columns) == ["user_id", "attributes"]


def test_items_take_their_most_frequent_category_and_earliest_time(tmp_path):
    items = retail.tables(write_log(tmp_path, CLEAN + DROPPED)).items.set_index("item_id")
    assert sorted(items.index) == [100, 200, 300]  # item 400 had only dropped lines
    assert items["attributes"].to_dict() == {100: "category=7", 200: "category=9", 300: "category=4"}
    assert items["first_seen"].to_dict() == {100: T0 + 5, 200: T0 + 20, 300: T0 + 30}
    assert (items["title"] == "").all()
    assert not any(b in " ".join(items["attributes"]) for b in retail.ACTIONS)  # behaviour names kept nowhere


def test_tables_logs_one_warning_with_the_counts(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datasets.retail"):
        retail.tables(write_log(tmp_path, CLEAN + DROPPED, MALFORMED))
    [record] = caplog.records
    assert "dropped 8 of 14 lines" in record.getMessage()
    assert "4 unparsed, 1 unknown behavior, 1 bad id, 2 out of time" in record.getMessage()


def test_a_clean_log_logs_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datasets.retail"):
        retail.tables(write_log(tmp_path, CLEAN))
    assert not caplog.records


@pytest.mark.parametrize("malformed", [(), ["1,2,3"]], ids=["typed-pass", "line-by-line"])
def test_limit_reads_only_the_first_lines(tmp_path, malformed):
    folder = write_log(tmp_path, CLEAN, malformed)
    tables, dropped = retail.tables_and_dropped(folder, limit=3)
    assert (tables.interactions["action"] == "click").sum() == 3 and sorted(tables.items["item_id"]) == [100]
    assert retail.tables_and_dropped(folder, limit=0)[0].interactions.empty


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_result_meets_the_contract_written_and_read_back(tmp_path, fmt):
    (tmp_path / "log").mkdir()
    tables = retail.tables(write_log(tmp_path / "log", CLEAN + DROPPED))
    folder = contract.write(tables, tmp_path / "contract", fmt)
    back = contract.read(folder)
    assert interactions(back) == interactions(tables)
    pd.testing.assert_frame_equal(back.items.sort_values("item_id").reset_index(drop=True),
                                  tables.items.sort_values("item_id").reset_index(drop=True), check_dtype=False)
    assert not (folder / "users.parquet").exists() and not (folder / "users.csv").exists()


def test_datasets_recognises_the_log_and_checks_it(tmp_path):
    write_log(tmp_path, CLEAN + DROPPED, MALFORMED)
    assert retail.is_retail(tmp_path) and not retail.is_retail(tmp_path / "elsewhere")
    history = datasets.load(tmp_path)
    assert len(history.events) == 6 and not history.has_impressions
    assert history.events["finish"].sum() == 1
    bought = history.events[history.events["finish"] == 1]
    assert bought[["click", "like"]].to_numpy().tolist() == [[1, 1]]  # a purchase is a positive for every task


def test_a_log_whose_lines_are_all_dropped_gives_empty_tables(tmp_path):
    tables, dropped = retail.tables_and_dropped(write_log(tmp_path, DROPPED, MALFORMED))
    assert tables.items.empty and tables.interactions.empty and sum(dropped.values()) == 8
    assert tables.interactions["item_id"].dtype == np.int64


def test_a_folder_without_the_log_is_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"UserBehavior\.csv does not exist.*behavior_type"):
        retail.tables(tmp_path)
    write_log(tmp_path, CLEAN)
    with pytest.raises(ValueError, match="limit -1"):
        retail.tables(tmp_path, limit=-1)
