"""The synthetic world (datasets/synthetic.py): seeded, in the contract's shape, and holding what it
promises: items arriving over time, impressions behind every action, taste-driven clicks, drift
and late actions."""

import numpy as np
import pandas as pd
import pytest

from datasets.contract import read
from datasets.history import from_tables
from datasets.synthetic import simulate, world, write_world

SMALL = dict(users=200, items=300, days=20, sessions_per_user=10)  # ~20k impressions, a fraction of a second
T0 = 1_700_000_000  # the default start, unix s
KEY = ["user_id", "item_id", "request_id"]


@pytest.fixture(scope="module")
def small():
    return simulate(**SMALL, seed=3)


def impressions_with_clicks(tables) -> pd.DataFrame:
    inter = tables.interactions
    clicks = inter[inter["action"] == "click"][KEY].drop_duplicates().assign(clicked=1)
    shown = inter[inter["action"] == "impression"]
    return shown.merge(clicks, on=KEY, how="left").fillna({"clicked": 0})


def test_the_same_seed_gives_identical_tables_and_another_seed_differs():
    a, b, c = world(**SMALL, seed=5), world(**SMALL, seed=5), world(**SMALL, seed=6)
    for table in ("items", "users", "interactions"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))
    assert not a.interactions.equals(c.interactions) and not a.items.equals(c.items)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_written_world_passes_the_contract_and_reads_back_the_same(tmp_path, fmt):
    folder = write_world(tmp_path / fmt, fmt, **SMALL, seed=2)
    assert (folder / f"interactions.{fmt}").exists()
    again, tables = read(folder), world(**SMALL, seed=2)
    for table in ("items", "users", "interactions"):
        pd.testing.assert_frame_equal(getattr(again, table), getattr(tables, table))
    assert tables.items["item_id"].min() == 1 and tables.users["user_id"].min() == 1
    assert tables.items["title"].str.len().gt(0).all() and tables.interactions["request_id"].str.len().gt(0).all()
    assert {t.split("=")[0] for a in tables.users["attributes"] for t in a.split("|")} == {"age", "gender", "region"}


def test_items_arrive_over_time_and_nothing_happens_before_an_item_exists(small):
    tables, _ = small
    first = tables.items.set_index("item_id")["first_seen"]
    later = (first > T0).mean()
    assert 0.3 < later < 0.7 and first.max() > T0 + 10 * 86_400
    inter = tables.interactions
    assert (inter["timestamp"] >= inter["item_id"].map(first)).all()
    late_items = first[first > T0 + 5 * 86_400].index
    assert inter["item_id"].isin(late_items).any()  # the newcomers do get shown


def test_every_action_answers_an_impression_of_the_same_request_and_position(small):
    inter = small[0].interactions
    shown = inter[inter["action"] == "impression"]
    assert not shown.duplicated(KEY).any()
    assert shown.groupby("request_id")["position"].agg(lambda p: sorted(p) == list(range(10))).all()
    actions = inter[inter["action"] != "impression"]
    assert set(actions["action"]) == {"click", "like", "finish", "share", "skip"}
    joined = actions.merge(shown[KEY + ["position", "timestamp"]], on=KEY, how="left", suffixes=("", "_shown"))
    assert joined["position_shown"].notna().all()
    assert (joined["position"] == joined["position_shown"]).all()
    assert (joined["timestamp"] > joined["timestamp_shown"]).all()
    engaged = actions[actions["action"].isin(["like", "finish"])][KEY]
    clicked = actions[actions["action"] == "click"][KEY]
    assert len(engaged.merge(clicked.drop_duplicates(), on=KEY)) == len(engaged)  # like and finish follow a click


def test_click_through_is_plausible_and_engagement_follows_taste(small):
    tables, latent = small
    shown = impressions_with_clicks(tables)
    assert 0.05 < shown["clicked"].mean() < 0.15
    affinity = latent.affinity(shown["user_id"], shown["item_id"], shown["timestamp"])
    near = affinity > np.median(affinity)
    assert shown["clicked"][near].mean() > 1.5 * shown["clicked"][~near].mean()
    # and exposure is biased: popular items fill a large share of the feeds
    counts = shown["item_id"].value_counts()
    assert counts.head(len(tables.items) // 10).sum() > 0.25 * len(shown)


def category_spread(tables, key: str, permute: np.random.Generator | None = None) -> float:
    """How much users' click mix over item categories differs between values of the user attribute
    ``key`` (mean over categories of max - min share), with the values shuffled over users if ``permute``."""
    category = tables.items.set_index("item_id")["attributes"].str.extract(r"category=(\w+)")[0]
    value = tables.users.set_index("user_id")["attributes"].str.extract(key + r"=([\w+-]+)")[0]
    if permute is not None:
        value = pd.Series(permute.permutation(value.to_numpy()), index=value.index)
    clicks = tables.interactions.query("action == 'click'")
    mix = pd.crosstab(clicks["user_id"].map(value), clicks["item_id"].map(category), normalize="index")
    return float((mix.max(axis=0) - mix.min(axis=0)).mean())


@pytest.mark.parametrize("key", ["region", "gender"])
def test_user_attributes_carry_taste(key):
    tables, rng = world(**SMALL, seed=4), np.random.default_rng(0)
    shuffled = np.mean([category_spread(tables, key, rng) for _ in range(5)])
    assert category_spread(tables, key) > 1.5 * shuffled  # more than chance: the attribute tells tastes apart


def stay_rate(tables) -> float:
    """Share of a user's last-third clicks in the category they clicked most in the first third."""
    category = tables.items.set_index("item_id")["attributes"].str.extract(r"category=(\w+)")[0]
    clicks = tables.interactions.query("action == 'click'").assign(category=lambda d: d["item_id"].map(category))
    t0, t1 = clicks["timestamp"].min(), clicks["timestamp"].max()
    early = clicks[clicks["timestamp"] < t0 + (t1 - t0) / 3]
    late = clicks[clicks["timestamp"] > t1 - (t1 - t0) / 3]
    favourite = early.groupby("user_id")["category"].agg(lambda s: s.mode().iloc[0])
    late = late[late["user_id"].isin(favourite.index)]
    return float((late["category"] == late["user_id"].map(favourite)).mean())


def test_drift_makes_late_preferences_differ_from_early_ones():
    still, drifting = stay_rate(world(**SMALL, drift=0, seed=1)), stay_rate(world(**SMALL, drift=0.5, seed=1))
    assert still > 0.3  # without drift, tastes are stable enough to measure
    assert drifting < still - 0.05


@pytest.mark.parametrize("late_share", [0.05, 0.2])
def test_a_share_of_actions_is_late(late_share):
    inter = world(**SMALL, late_share=late_share, seed=7).interactions
    shown = inter[inter["action"] == "impression"][KEY + ["timestamp"]]
    actions = inter[inter["action"] != "impression"].merge(shown, on=KEY, suffixes=("", "_shown"))
    delay = actions["timestamp"] - actions["timestamp_shown"]
    late = delay > 86_400
    assert late.any() and delay.max() <= 3 * 86_400 + 3600
    assert abs(late.mean() - late_share) < 0.02 + 0.1 * late_share
    assert delay[~late].max() < 3600  # the others land within the hour


def test_no_late_actions_when_late_share_is_zero():
    inter = world(**SMALL, late_share=0, seed=7).interactions
    shown = inter[inter["action"] == "impression"][KEY + ["timestamp"]]
    actions = inter[inter["action"] != "impression"].merge(shown, on=KEY, suffixes=("", "_shown"))
    assert (actions["timestamp"] - actions["timestamp_shown"]).max() < 3600


def test_the_history_of_a_world_has_real_impressions(small):
    tables, _ = small
    data = from_tables(tables)
    assert data.has_impressions
    shown = (tables.interactions["action"] == "impression").sum()
    assert len(data.events) == shown  # one event per impression
    assert 0.05 < data.events["click"].mean() < 0.15
    assert data.first_seen[int(tables.items["item_id"].iloc[-1])] > T0 and data.item_attrs and data.user_attrs
