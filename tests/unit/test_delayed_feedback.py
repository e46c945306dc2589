"""Fake negative weighting (pipelines/online/delayed.py): what trains, with which weights, and
that the weights undo the stream's bias (a model of the FNW stream learns the true rate)."""

import numpy as np
import pytest

from models.sparse import push_gradients
from pipelines.online import delayed
from pipelines.online.arms import ArmRates
from pipelines.online.learner import OnlineLearner
from pipelines.online.upgrades import LabelUpgrades
from tests.serving_models import examples, trained_loader

TASKS = ["click", "like"]


def ex(request, item=1, click=0, like=0, **extra):
    return {"request_id": request, "item_id": item, "model_version": "flywheel/7", "sample_rate": 1.0,
            "labels": {"click": click, "like": like}, **extra}


def test_only_provisional_negatives_and_positive_tasks_train():
    batch = [ex("a", sample_rate=0.1, provisional=True), ex("a", click=1), ex("b", sample_rate=0.1),
             ex("c", like=1, sample_rates={"click": 0.0, "like": 1.0})]
    got = delayed.trainable(batch, TASKS)
    # the provisional as it is; a's click without its like 0; b (a final negative) gone; c's like
    assert got == [batch[0], {**batch[1], "sample_rates": {"click": 1.0, "like": 0.0}},
                   {**batch[3], "sample_rates": {"click": 0.0, "like": 1.0}}]


def test_fnw_weights_by_hand():
    batch = [ex("a", sample_rate=0.1, provisional=True), {**ex("a", click=1), "sample_rates": {"click": 1.0, "like": 0.0}}]
    scores = {"click": np.array([0.2, 0.5]), "like": np.array([0.1, 0.3])}
    first, second = delayed.weighted(batch, scores, TASKS)
    # provisional: (1 - p)(1 + p) / 0.1; positive: 1 + p; a task not trained stays at weight 0
    assert 1 / first["sample_rates"]["click"] == pytest.approx(0.96 / 0.1)
    assert 1 / first["sample_rates"]["like"] == pytest.approx(0.99 / 0.1)
    assert 1 / second["sample_rates"]["click"] == pytest.approx(1.5) and second["sample_rates"]["like"] == 0.0


@pytest.mark.parametrize("negative_rate", [1.0, 0.25])
def test_weights_make_the_stream_learn_the_true_rate(negative_rate):
    """One logit fitted to the FNW stream of 4,000 impressions with a true click rate of 0.3: with
    the weights it converges to 0.3, without them to the stream's 0.3 / 1.3."""
    rng = np.random.default_rng(0)
    clicked = rng.random(4000) < 0.3
    kept = rng.random(4000) < negative_rate  # the joiner keeps provisional negatives by hash
    stream = [ex(str(n), sample_rate=negative_rate, provisional=True) for n in range(4000) if kept[n]]
    stream += [ex(str(n), click=1) for n in range(4000) if clicked[n]]

    def fit(weigh: bool) -> float:
        logit = 0.0
        for _ in range(40):
            p = 1 / (1 + np.exp(-logit))
            scores = {t: np.full(len(stream), p) for t in TASKS}
            rows = delayed.weighted(delayed.trainable(stream, TASKS), scores, TASKS) if weigh else stream
            w = np.array([1 / r["sample_rates"]["click"] if weigh else 1.0 for r in rows])
            y = np.array([r["labels"]["click"] for r in rows])
            logit -= 4.0 * float(np.sum(w * (p - y)) / np.sum(w))  # weighted mean BCE gradient
        return float(1 / (1 + np.exp(-logit)))

    truth = clicked.sum() / (kept.sum() / negative_rate)  # clicks per impression, as the kept ones estimate them
    assert fit(True) == pytest.approx(truth, abs=0.003)
    if negative_rate == 1.0:  # unweighted: the stream's own rate, every click also a negative
        assert fit(False) == pytest.approx(truth / (1 + truth), abs=0.003)


def test_a_provisional_negative_is_not_merged_into_its_positive():
    up = LabelUpgrades()
    got = up.apply([ex("a", sample_rate=0.1, provisional=True), ex("a", click=1), ex("a", click=1, like=1)], TASKS)
    assert got[0] == ex("a", sample_rate=0.1, provisional=True)
    assert got[1]["upgrade"] and got[1]["sample_rates"] == {"click": 1.0, "like": 1.0}  # both rose from 0
    assert up.apply([ex("a", sample_rate=0.1, provisional=True)], TASKS) == []  # a replayed one: nothing


def test_with_provisional_negatives_an_arm_counts_impressions_when_served():
    rates = ArmRates(provisional_impressions=True)
    rates.add([ex("a", 1, sample_rate=0.5, provisional=True), ex("a", 2, sample_rate=0.5, provisional=True)], TASKS)
    rates.add([ex("a", 1, click=1), ex("a", 3, sample_rate=0.5)], TASKS)  # a positive, a final negative
    click = rates.figures()["champion"]["click"]
    assert click["impressions"] == 4.0 and click["positives"] == 1.0 and click["rate"] == 0.25


def test_the_learner_trains_the_fnw_stream(tmp_path):
    loader = trained_loader(tmp_path)
    source = loader.current.ranker.source
    learner = OnlineLearner(loader, window=500)  # fnw is the default
    served = examples(32, 21)
    for n, e in enumerate(served):
        e.update(request_id=f"q{n}", labels={t: 0 for t in e["labels"]}, sample_rate=0.5, provisional=True)
    push_gradients(source, learner.step(served, source))  # impressions train at once, as negatives
    at_impression = learner.recent[0][2]
    final = [{**e, "provisional": None} for e in served[:8]]  # their label windows close: nothing new
    assert learner.step(final, source) == {}
    clicked = {**served[0], "provisional": None, "sample_rate": 1.0, "labels": {"click": 1, "like": 0, "finish": 0}}
    grads = learner.step([clicked], source)
    assert grads and len(learner.recent) == 33  # 32 impressions, then one positive
    assert learner.recent[-1][0]["click"] == 1 and learner.recent[-1][1]["like"] == 0.0  # like not trained
    # validated with its impression's score, not one taken after it trained as a negative
    assert learner.recent[-1][2] == at_impression
    assert at_impression["click"] != float(learner.loader.current.ranker.score([clicked])["click"][0])
    assert learner.metrics()["arm_champion_click_rate"] == pytest.approx(1 / 64)  # 1 click over 32 / 0.5
    assert learner.metrics()["provisional_negatives"] == 32.0
    waiting = OnlineLearner(loader, window=500, delayed_feedback="wait")  # a joiner still sending provisional ones
    assert waiting.step(served, source) == {} and waiting.examples == 32  # not trained as negatives of their own
    with pytest.raises(ValueError, match="delayed_feedback"):
        OnlineLearner(loader, delayed_feedback="later")


def test_fnw_without_provisional_negatives_is_reported(tmp_path, caplog):
    learner = OnlineLearner(trained_loader(tmp_path), window=500)
    finals = examples(128, 5)
    for n, e in enumerate(finals):
        e.update(request_id=f"f{n}", labels={t: 0 for t in e["labels"]})
    learner.step(finals, learner.loader.current.ranker.source)
    assert "without --provisional-negatives" in caplog.text
