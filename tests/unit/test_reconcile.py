"""The chaos run's bookkeeping: which acknowledged actions are lost or doubled on the topic,
which clicks were never joined, and the failing stretches of the feed."""

from flywheel.chaos import Traffic
from collections import Counter

from flywheel.reconcile import action_key, actions_reconciled, examples_reconciled, rewritten_by_retries, unlogged_clicks


def a(rid, item, kind="click", t=1):
    return {"request_id": rid, "item_id": item, "action": kind, "event_time": t, "user_id": 1}


def test_lost_and_doubled_actions_are_named_and_others_ignored():
    acked = [a("r1", 1), a("r1", 1, "like"), a("r2", 2), a("r3", 3)]
    written = [a("r1", 1), a("r1", 1, "like"), a("r1", 1, "like"), a("r3", 3), a("other", 9), a("r2", 2, t=2)]
    t = actions_reconciled(acked, written)
    assert t.expected == 4 and not t.ok
    assert t.lost == [("r2", 2, "click", 1)]  # a different event time is another action
    assert t.doubled == [("r1", 1, "like", 1)]
    assert actions_reconciled(acked[:1], written[:1]).ok


def test_an_action_posted_again_after_an_unanswered_post_may_be_written_twice_but_not_three_times():
    acked = [a("r1", 1), a("r2", 2), a("r3", 3)]
    written = [a("r1", 1), a("r1", 1), a("r2", 2), a("r2", 2), a("r2", 2), a("r3", 3), a("r3", 3)]
    # r1 and r2: one post each got no answer (the server crashed), then a retry was acknowledged;
    # r3: its first post was answered 503 ("not written"), so its second write is a double
    unanswered = Counter({action_key(acked[0]): 1, action_key(acked[1]): 1})
    t = actions_reconciled(acked, written, unanswered)
    assert t.doubled == [("r2", 2, "click", 1), ("r3", 3, "click", 1)]
    assert rewritten_by_retries(acked, written, unanswered) == [("r1", 1, "click", 1)]
    assert actions_reconciled(acked, written).doubled == [("r1", 1, "click", 1), ("r2", 2, "click", 1),
                                                          ("r3", 3, "click", 1)]


def test_a_click_is_joined_only_by_an_example_labelled_click_and_a_repeated_emission_is_doubled():
    acked = [a("r1", 1), a("r2", 2), a("r3", 3, "like")]
    examples = [{"request_id": "r1", "item_id": 1, "labels": {"click": 1, "like": 0}},
                {"request_id": "r2", "item_id": 2, "labels": {"click": 0, "like": 0}},  # the negative only
                {"request_id": "r1", "item_id": 1, "labels": {"like": 0, "click": 1}}]  # the same emission again
    t = examples_reconciled(acked, examples)
    assert t.expected == 2  # likes alone are not counted: clicks are
    assert t.lost == [("r2", 2)] and t.doubled == [("r1", 1)]
    corrected = [{"request_id": "r2", "item_id": 2, "labels": {"click": 0}},
                 {"request_id": "r2", "item_id": 2, "labels": {"click": 1}, "is_correction": True}]
    assert examples_reconciled([a("r2", 2)], corrected).ok


def test_traffic_windows_count_failures_and_the_longest_failing_stretch():
    t = Traffic("http://127.0.0.1:1")
    t.feeds = [(0.0, True, 0.1), (1.0, False, 5), (2.0, False, 5), (4.5, False, 0.2), (5.0, True, 0.9),
               (6.0, False, 5), (9.0, True, 0.3)]
    assert t.window(0, 10) == (7, 4, 3.5, 0.9)  # the slowest answered feed, not a failed one
    assert t.window(5, 10) == (3, 1, 0.0, 0.9)


def test_a_click_whose_features_were_never_logged_is_set_apart_not_called_a_lost_join():
    acked = [a("r1", 1), a("r2", 2), a("r3", 3, "like")]
    features = [{"request_id": "r1", "item_id": 1}, {"request_id": "r3", "item_id": 3}]
    unlogged = unlogged_clicks(acked, features)
    assert unlogged == [("r2", 2)]
    t = examples_reconciled(acked, [{"request_id": "r1", "item_id": 1, "labels": {"click": 1}}], unlogged)
    assert t.ok and t.expected == 1
