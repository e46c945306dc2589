"""Per-task negative sampling: nested decisions, stable keys, unbiased weights, clear errors."""

import pytest

from streaming.sampling import example_rates, parse_rates, sample_negative, uniform
from streaming.schemas import TASKS, Example, SchemaError, encode, parse_example
from tests.unit.test_schemas import make_features, wire

RATES = {"click": 0.1, "like": 0.5, "finish": 0.5, "share": 1.0}


def test_a_key_always_gets_the_same_decision():
    assert all(sample_negative(f"r{i}|1", RATES) == sample_negative(f"r{i}|1", RATES) for i in range(100))
    assert uniform("a") != uniform("b") and 0 <= uniform("a") < 1


def test_decisions_are_nested_and_each_task_keeps_its_share():
    n = 20_000
    kept = [sample_negative(f"req-{i}|{i % 97}", RATES) for i in range(n)]
    for task, rate in RATES.items():
        share = sum(1 for k in kept if k and k[task] > 0) / n
        assert share == pytest.approx(rate, abs=0.015), task
        # kept for a rarer task implies kept for every commoner one
        assert all(k[t] > 0 for k in kept if k and k[task] > 0 for t in RATES if RATES[t] >= rate)
    # weights 1/r restore every task's count of negatives in expectation
    for task, rate in RATES.items():
        assert sum(1 / k[task] for k in kept if k and k[task] > 0) == pytest.approx(n, rel=0.05)
    assert all(k is not None for k in kept)  # share = 1.0 keeps everything


def test_equal_rates_keep_examples_compact():
    assert example_rates(dict.fromkeys(TASKS, 0.1)) == (0.1, None)
    assert example_rates({"click": 0.0, "like": 0.5}) == (0.5, {"click": 0.0, "like": 0.5})


def test_rates_parse_from_the_command_line():
    assert parse_rates("", TASKS, 0.1) == dict.fromkeys(TASKS, 0.1)
    assert parse_rates("like=0.3, share=1", TASKS, 0.1)["like"] == 0.3
    for bad, words in (("views=0.2", "views=0.2"), ("like", "task=rate"), ("like=x", "not a number"),
                       ("like=0", "0 < rate <= 1"), ("like=1.5", "0 < rate <= 1")):
        with pytest.raises(ValueError, match=words):
            parse_rates(bad, TASKS, 0.1)


def test_examples_carry_per_task_rates_and_refuse_inconsistent_ones():
    rates = {"click": 0.0, "like": 0.5, "finish": 0.5, "share": 0.25}
    ex = Example.from_features(make_features(), dict.fromkeys(TASKS, 0), 0.5, 1000, sample_rates=rates)
    back = parse_example(encode(ex))
    assert back.sample_rates == rates and back.task_rates() == rates
    plain = Example.from_features(make_features(), dict.fromkeys(TASKS, 0), 0.1, 1000)
    assert b"sample_rates" not in encode(plain) and parse_example(encode(plain)).task_rates()["like"] == 0.1
    for bad, reason in (({**rates, "like": 0.75}, "inconsistent"),  # max is not sample_rate
                        ({**rates, "views": 0.5}, "unknown_field"), ({**rates, "share": 1.5}, "out_of_range")):
        with pytest.raises(SchemaError) as err:
            parse_example(wire(ex, sample_rates=bad))
        assert err.value.reason == reason and err.value.field.startswith("sample_rates")
    positive = {"click": 1, "like": 0, "finish": 0, "share": 0}
    with pytest.raises(Exception, match="positive task is never sampled"):
        Example.from_features(make_features(), positive, 0.5, 10, sample_rates=rates)
