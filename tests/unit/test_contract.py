"""The data contract: a good folder passes (CSV and Parquet); each kind of malformed file is
refused with its file, row, column and what to do; ``flywheel import --check`` says the same."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from datasets import load
from datasets.contract import MAX_PROBLEMS, ContractError, read, write
from flywheel.cli import app

T = 1_700_000_000  # unix s

ITEMS = "item_id,attributes,first_seen,title\n1,genre=Drama|year=1995,{t},A\n2,genre=Comedy,{t},B\n3,,{t},\n"
USERS = "user_id,attributes\n7,age=30s|gender=F\n8,\n"
INTERACTIONS = ("user_id,item_id,action,timestamp,request_id,position\n"
                "7,1,impression,{t},r1,0\n7,2,impression,{t},r1,1\n7,1,click,{t1},r1,0\n8,3,like,{t2},,\n")


def folder(tmp_path, items=ITEMS, users=USERS, interactions=INTERACTIONS):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in (("items", items), ("users", users), ("interactions", interactions)):
        if text is not None:
            (tmp_path / f"{name}.csv").write_text(text.format(t=T, t1=T + 5, t2=T + 9))
    return tmp_path


def problems(path, **kwargs) -> str:
    with pytest.raises(ContractError) as err:
        read(path, **kwargs)
    return str(err.value)


def test_a_good_folder_passes_and_reads_the_same_as_parquet(tmp_path):
    tables = read(folder(tmp_path / "csv"))
    assert list(tables.interactions["timestamp"]) == sorted(tables.interactions["timestamp"])
    assert tables.interactions["request_id"].tolist()[-1] == "" and tables.interactions["position"].dtype == "int64"
    again = read(write(tables, tmp_path / "parquet", "parquet"))
    pd.testing.assert_frame_equal(again.interactions, tables.interactions)
    pd.testing.assert_frame_equal(again.items, tables.items)
    data = load(tmp_path / "csv")
    assert data.has_impressions and data.events["click"].tolist() == [1, 0, 0]
    assert data.events["like"].tolist() == [0, 0, 1]


def test_users_and_optional_columns_may_be_left_out(tmp_path):
    tables = read(folder(tmp_path, items="item_id\n1\n2\n3\n", users=None))
    assert tables.users.empty and set(tables.items["attributes"]) == {""}
    assert tables.items.set_index("item_id")["first_seen"].to_dict() == {1: T, 2: T, 3: T + 9}  # first interaction


def test_a_missing_file_is_named(tmp_path):
    message = problems(folder(tmp_path, interactions=None))
    assert "interactions.csv (or interactions.parquet) is missing" in message


def test_a_missing_column_is_named_with_the_columns_found(tmp_path):
    message = problems(folder(tmp_path, interactions=INTERACTIONS.replace("timestamp", "time")))
    assert "interactions.csv: column timestamp is missing (columns found: user_id, item_id, action, time" in message


def test_a_wrong_type_names_the_line_and_the_column(tmp_path):
    message = problems(folder(tmp_path, interactions=INTERACTIONS.replace("7,2,impression", "seven,2,impression")))
    assert "interactions.csv line 3, column user_id: 'seven' is not an integer: fix the value or drop the row" in message


def test_an_unknown_action_says_where_to_map_it(tmp_path):
    message = problems(folder(tmp_path, interactions=INTERACTIONS.replace(",like,", ",purchase,")))
    assert "interactions.csv line 5, column action: 'purchase' is not a known action" in message
    assert "data.actions" in message
    assert read(tmp_path, actions={"purchase": ["finish"]})  # mapped: fine, and the default names stay known
    assert load(tmp_path, actions={"purchase": ["click", "finish"]}).events["finish"].tolist() == [0, 0, 1]


def test_a_duplicate_item_names_both_lines(tmp_path):
    message = problems(folder(tmp_path, items=ITEMS + "2,genre=Horror,{t},C\n"))
    assert "items.csv line 5, column item_id: 2 repeats line 3: each item_id appears once" in message


@pytest.mark.parametrize("bad, hint", [(T * 1000, "milliseconds? divide by 1000"), (-5, "fix the clock")])
def test_timestamps_out_of_range_are_refused(tmp_path, bad, hint):
    message = problems(folder(tmp_path, interactions=INTERACTIONS.replace("{t2}", str(bad))))
    assert f"interactions.csv line 5, column timestamp: '{bad}' is outside 1990..2100" in message and hint in message


def test_an_interaction_with_an_unknown_item_is_refused(tmp_path):
    message = problems(folder(tmp_path, interactions=INTERACTIONS.replace("8,3,like", "8,99,like")))
    assert "line 5, column item_id: 99 is not in items.csv: add the item there" in message


def test_many_problems_are_counted_not_all_listed(tmp_path):
    rows = "".join(f"7,1,bogus,{T},,\n" for _ in range(MAX_PROBLEMS + 7))
    with pytest.raises(ContractError) as err:
        read(folder(tmp_path, interactions=INTERACTIONS.split("\n")[0] + "\n" + rows))
    assert len(err.value.problems) == MAX_PROBLEMS and f"({MAX_PROBLEMS + 7} problems" in str(err.value)
    assert "... and 7 more" in str(err.value)


def test_parquet_rows_are_counted_from_one(tmp_path):
    tables = read(folder(tmp_path / "csv"))
    bad = tables.interactions.assign(action=["click", "click", "oops", "click"])
    write(type(tables)(tables.items, tables.users, bad), tmp_path / "pq")
    assert "interactions.parquet row 3, column action: 'oops'" in problems(tmp_path / "pq")


def test_import_check_reports_the_contract_and_lands_nothing(tmp_path):
    runner = CliRunner()
    good = runner.invoke(app, ["import", str(folder(tmp_path / "good")), "--check"])
    assert good.exit_code == 0, good.output
    assert "meets the contract: 3 items, 2 users, 3 events" in good.output and "real impressions" in good.output
    bad = runner.invoke(app, ["import", str(folder(tmp_path / "bad", items=ITEMS + "1,x,{t},D\n")), "--check"])
    assert bad.exit_code == 2 and "each item_id appears once" in bad.output
    unknown = runner.invoke(app, ["import", str(tmp_path / "good"), "--format", "excel", "--check"])
    assert unknown.exit_code == 2 and "--format excel: expected one of auto, contract" in unknown.output


def test_the_synthetic_world_command_writes_a_folder_that_meets_the_contract(tmp_path):
    runner = CliRunner()
    made = runner.invoke(app, ["synthetic-world", str(tmp_path / "w"), "--users", "20", "--items", "30", "--days", "2"])
    assert made.exit_code == 0, made.output
    assert {p.name for p in (tmp_path / "w").iterdir()} == {"items.csv", "users.csv", "interactions.csv"}
    checked = runner.invoke(app, ["import", str(tmp_path / "w"), "--check"])
    assert checked.exit_code == 0 and "30 items" in checked.output and "real impressions" in checked.output


def test_nulls_in_optional_parquet_integers_take_their_default(tmp_path):
    tables = read(folder(tmp_path / "csv"))
    nullable = tables.interactions.assign(position=pd.array([0, None, 1, None], dtype="Int64"))
    write(type(tables)(tables.items, tables.users, nullable), tmp_path / "pq")
    assert read(tmp_path / "pq").interactions["position"].tolist() == [0, 0, 1, 0]
    required = tables.interactions.assign(user_id=pd.array([7, None, 7, 8], dtype="Int64"))
    write(type(tables)(tables.items, tables.users, required), tmp_path / "pq2")
    assert "interactions.parquet row 2, column user_id" in problems(tmp_path / "pq2")


def test_a_file_that_cannot_be_read_is_named(tmp_path):
    folder(tmp_path)
    (tmp_path / "users.csv").write_text("")
    assert "users.csv cannot be read as CSV with a header row" in problems(tmp_path)
    (tmp_path / "users.csv").unlink()
    (tmp_path / "items.csv").unlink()
    (tmp_path / "items.parquet").write_bytes(b"not parquet")
    assert "items.parquet cannot be read as Parquet" in problems(tmp_path)


def test_an_empty_history_is_refused(tmp_path):
    message = problems(folder(tmp_path, interactions=INTERACTIONS.split("\n")[0] + "\n"))
    assert "interactions.csv holds no rows" in message


def test_large_ids_stay_exact(tmp_path):
    big = 2**60 + 1
    items = ITEMS.replace("\n3,,", f"\n{big}.0,,")
    tables = read(folder(tmp_path, items=items, interactions=INTERACTIONS.replace("8,3,like", f"8,{big},like")))
    assert big in tables.items["item_id"].tolist() and big in tables.interactions["item_id"].tolist()
    huge = INTERACTIONS.replace("8,3,like", f"{2**63},3,like")
    assert f"'{2**63}' is beyond 64 bits" in problems(folder(tmp_path / "huge", interactions=huge))
