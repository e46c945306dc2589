"""The online A/B test's parts: the traffic split, the live popularity arm, the feed that
serves it with the arm in its features, and each arm's rates from joined examples."""

import numpy as np
import pytest

from pipelines.online.arms import ArmRates, wilson
from serving.arms import TrafficSplit, Trending
from serving.catalogue import Catalogue
from serving.feed import FeedBuilder
from serving.history import Histories
from streaming.schemas import arm_of
from tests.serving_models import trained_loader


def test_users_split_in_the_configured_shares_and_stay_in_their_arm():
    split = TrafficSplit({"champion": 0.7, "popularity": 0.3})
    arms = [split.arm(u) for u in range(20_000)]
    share = arms.count("popularity") / len(arms)
    assert abs(share - 0.3) < 0.015  # 4.6 standard deviations of a binomial share at n = 20,000
    assert [split.arm(u) for u in range(200)] == arms[:200]  # stable, also in a new process (a hash, not random)
    assert TrafficSplit({"champion": 0.7, "popularity": 0.3}, salt="other").arm(7) in ("champion", "popularity")
    assert {TrafficSplit({"champion": 1.0, "popularity": 0}).arm(u) for u in range(500)} == {"champion"}


@pytest.mark.parametrize("shares, words", [({"champion": 0.5, "bandit": 0.5}, "unknown arm"),
                                           ({"champion": 0.5}, "sum to 1"), ({"champion": 1.5, "popularity": -0.5}, ">= 0")])
def test_a_bad_split_is_refused_saying_why(shares, words):
    with pytest.raises(ValueError, match=words):
        TrafficSplit(shares)


def test_the_popularity_arm_counts_clicks_in_its_trailing_window():
    now = [1_000.0]  # the server's clock, s
    trending = Trending(window_s=60, clock=lambda: now[0])
    trending.set_base([1, 2, 3], [5, 9, 0])
    assert [i for i, _ in trending.top(3)] == [2, 1, 3]  # no clicks yet: the bundle's recent clicks
    now[0] += 60  # a window later the bundle's counts have faded out
    for t in (1_000_000, 1_001_000, 1_002_000):  # event times, ms
        trending.click(3, t)
    trending.click(1, 1_030_000)
    assert trending.top(2) == [(3, 3.0), (1, 1.0)]
    assert trending.top(2, exclude={3}) == [(1, 1.0), (2, 0.0)]
    trending.click(1, 1_061_500)  # 3's clicks at 1,000 and 1,001 s fall out of [1,001.5 s, 1,061.5 s]
    assert trending.top(2) == [(1, 2.0), (3, 1.0)]
    trending.click(3, 1_000_500)  # a late click older than the window: not counted
    assert trending.top(1) == [(1, 2.0)]


def test_the_bundles_counts_fade_over_a_window_and_a_future_clock_cannot_stall_it():
    now = [0.0]
    trending = Trending(window_s=100, clock=lambda: now[0])
    trending.set_base([1, 2], [50, 0])
    trending.click(2, 0)
    assert trending.top(1) == [(1, 50.0)]  # one live click does not outrank the retrain's 50
    now[0] = 75
    assert trending.top(2) == [(1, 12.5), (2, 1.0)]  # a quarter of the window left
    trending.click(2, 4_102_000_000_000)  # a client clock in 2099: counted as now + 60 s
    trending.click(1, 80_000)  # real clicks still count
    assert dict(trending.top(2))[1] == pytest.approx(1 + 50 * 0.25)


def test_the_feed_serves_each_user_their_arm_and_writes_it_into_the_features(tmp_path):
    loader = trained_loader(tmp_path)
    now = [0.0]
    trending = Trending(window_s=3600, clock=lambda: now[0])
    split = TrafficSplit({"champion": 0.5, "popularity": 0.5})
    builder = FeedBuilder(loader, Catalogue(), Histories(), candidates=20, split=split, trending=trending)
    versions = {}
    for user in range(1, 40):
        _, version, served = builder.build(user, k=5)
        assert len(served) == 5 and {s.features.model_version for s in served} == {version}
        versions[user] = version
        assert arm_of(version) == split.arm(user)
    popular = [u for u, v in versions.items() if arm_of(v) == "popularity"]
    assert popular and len(popular) < 39 and versions[popular[0]] == "popularity:1h"
    _, _, served = builder.build(popular[0], k=3)  # the bundle's most clicked items, before any live click
    counts = dict(zip(loader.current.retriever.items.tolist(), loader.current.retriever.popularity.tolist()))
    assert [s.item_id for s in served] == sorted(counts, key=lambda i: (-counts[i], i))[:3]
    now[0] = 3600  # an hour on, the bundle's counts have faded: a live click moves item 40 to the top
    trending.click(40, 3_600_000)
    assert builder.build(popular[0], k=3)[2][0].item_id == 40
    assert arm_of("flywheel/7") == "champion" and arm_of(None) == "champion"


def test_wilson_interval_by_hand():
    lo, hi = wilson(0.5, 100)  # centre 0.5, half-width 1.96 * sqrt(0.25/100 + 1.96^2/40000) / (1 + 1.96^2/100)
    half = 1.959964 * np.sqrt(0.0025 + 1.959964**2 / 40_000) / (1 + 1.959964**2 / 100)
    assert lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    assert wilson(0.0, 0) == (0.0, 1.0) and wilson(0.0, 50)[0] == 0.0


def example(request, item, arm, click=0, like=0, rate=1.0):
    return {"request_id": request, "item_id": item, "model_version": arm, "sample_rate": rate,
            "labels": {"click": click, "like": like}}


def test_arm_rates_weigh_sampled_negatives_and_count_an_upgrade_once():
    rates = ArmRates()
    first = [example("r1", 1, "flywheel/7", click=1), example("r1", 2, "flywheel/7", rate=0.5),
             example("r2", 1, "popularity:24h"), example("r2", 2, "popularity:24h", click=1)]
    rates.add(first, ["click", "like"])
    # later: r1/1 is liked too (an upgrade, not a new impression), r2/2 exactly repeated (nothing)
    later = [example("r1", 1, "flywheel/7", click=1, like=1), example("r2", 2, "popularity:24h", click=1)]
    rates.add(later, ["click", "like"])
    rates.add(first + later, ["click", "like"])  # the trainer rolled back and replays them: counted once
    got = rates.figures()
    champion, popularity = got["champion"], got["popularity"]
    assert champion["click"]["impressions"] == 3.0  # 1 + the kept negative standing for 2
    assert champion["click"]["rate"] == pytest.approx(1 / 3) and champion["like"]["rate"] == pytest.approx(1 / 3)
    assert popularity["click"]["impressions"] == 2.0 and popularity["click"]["rate"] == 0.5
    assert popularity["like"]["rate"] == 0.0
    lo, hi = champion["click"]["lo"], champion["click"]["hi"]
    assert (lo, hi) == pytest.approx(wilson(1 / 3, 9 / 5))  # effective n = 3^2 / (1 + 4)
    flat = rates.metrics()
    assert flat["arm_popularity_click_rate"] == 0.5 and flat["arm_champion_impressions"] == 3.0
