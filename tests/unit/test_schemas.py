"""Event schemas: round trips, one test per reject reason, keys, size limits, dead letters."""

import base64
import hashlib
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from streaming import schemas
from streaming.schemas import (
    ACTION_TYPES, MAX_DEAD_LETTER_PAYLOAD, MAX_FEATURES_PER_SLOT, MAX_MESSAGE_BYTES, SCHEMA_VERSION, TASKS,
    Action, DeadLetter, Example, Features, SchemaError, dead_letter, encode, key_of, labels_from_action,
    parse_action, parse_example, parse_features,
)

T0 = 1_750_000_000_000  # epoch ms, June 2025


def make_action(**over) -> Action:
    return Action(**{"request_id": "req-1", "user_id": 7, "item_id": 42, "event_time": T0, "action": "click",
                     "watch_time_ms": 3_500, **over})


def make_features(**over) -> Features:
    return Features(**{"request_id": "req-1", "user_id": 7, "item_id": 42, "event_time": T0 - 900, "position": 3,
                       "model_version": "mmoe@champion/17", "sparse": {"user_id": [7], "item_id": [2**63 - 1, 0]},
                       "dense": {"item_ctr": 0.125, "age_days": 3.0}, **over})


def make_example(**over) -> Example:
    joined = {"sample_rate": 0.25, "join_delay_ms": 900, "is_correction": False}
    features = make_features(**{k: v for k, v in over.items() if k not in joined})
    joined.update((k, v) for k, v in over.items() if k in joined)
    return Example.from_features(features, labels_from_action("like"), **joined)


def wire(model, **over) -> bytes:
    """The model's JSON with fields replaced (or removed, with value ``...``)."""
    data = {**json.loads(encode(model)), **over}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


# -- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("model, parse", [
    (make_action(), parse_action), (make_action(watch_time_ms=None, action="impression"), parse_action),
    (make_features(), parse_features), (make_features(sparse={}, dense={}), parse_features),
    (make_example(), parse_example), (make_example(is_correction=True), parse_example),
    (Example.from_features(make_features(), dict.fromkeys(TASKS, 0), 0.1, 0, provisional=True), parse_example),
])
def test_round_trip_is_exact_compact_and_versioned(model, parse):
    raw = encode(model)
    assert parse(raw) == model
    assert parse(raw.decode()) == model  # str, as Flink's SimpleStringSchema hands it over
    assert b" " not in raw and b"null" not in raw
    assert json.loads(raw)["schema_version"] == SCHEMA_VERSION


def test_example_carries_every_features_field():
    example, features = make_example(), make_features()
    assert {k: v for k, v in example.model_dump().items() if k in Features.model_fields} == features.model_dump()
    assert example.labels == {"click": 0, "like": 1, "finish": 0, "share": 0}


def test_from_features_checks_what_the_joiner_adds():
    for bad in ({"labels": {"click": 1}}, {"sample_rate": 0.0}, {"join_delay_ms": -1},
                {"labels": dict.fromkeys(TASKS, 0), "is_correction": True}):
        args = {"labels": labels_from_action("click"), "sample_rate": 0.5, "join_delay_ms": 0, **bad}
        with pytest.raises(ValueError):
            Example.from_features(make_features(), **args)


def test_keys_co_partition_a_user_across_the_three_topics():
    models = [make_action(user_id=123456789), make_features(user_id=123456789), make_example(user_id=123456789)]
    assert {key_of(m) for m in models} == {b"123456789"}
    assert key_of(make_action(user_id=2**63 - 1)) == b"9223372036854775807"
    partitions = {(murmur2(key_of(m)) & 0x7FFFFFFF) % 2 for m in models}  # kafka-python's default partitioner
    assert len(partitions) == 1


# -- labels -------------------------------------------------------------------------------------

def test_labels_come_from_action_types_in_one_place():
    assert set(TASKS) == {"click", "like", "finish", "share"} and set(TASKS) < set(ACTION_TYPES)
    for action in ("impression", "skip"):
        assert labels_from_action(action) == dict.fromkeys(TASKS, 0)
    for task in TASKS:
        assert labels_from_action(task) == {t: int(t == task) for t in TASKS}
    with pytest.raises(SchemaError) as err:
        labels_from_action("purchase")
    assert err.value.reason == "out_of_range" and "purchase" in str(err.value)


# -- rejects: every reason code, with field, value and expectation in the message -------------

A, F, E = make_action(), make_features(), make_example()
REJECTS = [
    # (parse, raw, reason, field, words the message must hold)
    (parse_features, b"{not json", "bad_json", None, ["Invalid JSON"]),
    (parse_features, b"[1, 2]", "bad_json", None, ["one JSON object"]),
    (parse_features, b"\xff\xfe{}", "bad_json", None, ["Invalid JSON"]),
    (parse_action, wire(A, color="red"), "unknown_field", "color", ["'red'", "known: schema_version"]),
    (parse_example, wire(E, labels={**E.labels, "buy": 1}), "unknown_field", "labels.buy", ["click, like"]),
    (parse_features, wire(F, position=...), "missing_field", "position", ["required"]),
    (parse_example, wire(E, labels={"click": 1}), "missing_field", "labels.like", ["required", "more"]),
    (parse_action, wire(A, schema_version=...), "bad_version", "schema_version", ["expected 1"]),
    (parse_action, wire(A, schema_version=2), "bad_version", "schema_version", ["= 2", "expected 1"]),
    (parse_action, wire(A, schema_version="1"), "bad_version", "schema_version", ["'1'"]),
    (parse_features, wire(F, position=1.0), "bad_type", "position", ["1.0", "integer"]),
    (parse_action, wire(A, user_id="7"), "bad_type", "user_id", ["'7'", "integer"]),
    (parse_features, wire(F, sparse={"user_id": [7.5]}), "bad_type", "sparse.user_id.0", ["7.5", "integer"]),
    (parse_features, wire(F, dense={"ctr": "high"}), "bad_type", "dense.ctr", ["'high'", "number"]),
    (parse_features, wire(F, model_version=17), "bad_type", "model_version", ["17", "string"]),
    (parse_example, wire(E, labels={**E.labels, "click": True}), "bad_type", "labels.click", ["True"]),
    (parse_example, wire(E, is_correction=1), "bad_type", "is_correction", ["1", "boolean"]),
    (parse_action, wire(A, user_id=-1), "out_of_range", "user_id", ["-1", "greater than or equal to 0"]),
    (parse_action, wire(A, item_id=2**63), "out_of_range", "item_id", [str(2**63)]),
    (parse_features, wire(F, sparse={"s": [2**63]}), "out_of_range", "sparse.s.0", [str(2**63)]),
    (parse_action, wire(A, event_time=T0 // 1000), "out_of_range", "event_time", ["seconds or microseconds"]),
    (parse_action, wire(A, event_time=T0 * 1000), "out_of_range", "event_time", ["epoch milliseconds"]),
    (parse_action, wire(A, action="purchase"), "out_of_range", "action", ["'purchase'", "'impression'"]),
    (parse_action, wire(A, watch_time_ms=-5), "out_of_range", "watch_time_ms", ["-5"]),
    (parse_features, wire(F, request_id=""), "out_of_range", "request_id", ["pattern"]),
    (parse_features, wire(F, sparse={"Bad Slot": [1]}), "out_of_range", "sparse.Bad Slot.[key]", ["'Bad Slot'"]),
    (parse_features, wire(F, dense={"x": float("nan")}), "out_of_range", "dense.x", ["nan", "finite"]),
    (parse_example, wire(E, sample_rate=0), "out_of_range", "sample_rate", ["greater than 0"]),
    (parse_example, wire(E, sample_rate=1.5), "out_of_range", "sample_rate", ["1.5"]),
    (parse_example, wire(E, labels={**E.labels, "click": 2}), "out_of_range", "labels.click", ["2"]),
    (parse_features, wire(F, sparse={"s": list(range(MAX_FEATURES_PER_SLOT + 1))}), "too_large", "sparse.s",
     [str(MAX_FEATURES_PER_SLOT)]),
    (parse_features, b" " * (MAX_MESSAGE_BYTES + 1), "too_large", None, [str(MAX_MESSAGE_BYTES)]),
    (parse_example, wire(E, is_correction=True, labels=dict.fromkeys(TASKS, 0)), "inconsistent", "is_correction",
     ["late positive"]),
    (parse_example, wire(E, provisional=True), "inconsistent", "provisional", ["every label 0"]),
]


@pytest.mark.parametrize("parse, raw, reason, field, words", REJECTS, ids=[f"{r[2]}:{r[3]}" for r in REJECTS])
def test_reject_names_reason_field_value_and_expectation(parse, raw, reason, field, words):
    with pytest.raises(SchemaError) as err:
        parse(raw)
    assert (err.value.reason, err.value.field) == (reason, field)
    message = str(err.value)
    assert {parse_action: "Action.", parse_features: "Features", parse_example: "Example"}[parse] in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert isinstance(err.value, ValueError)


def test_every_reason_code_is_exercised():
    assert {r[2] for r in REJECTS} == {"too_large", "bad_json", "unknown_field", "missing_field", "bad_type",
                                       "out_of_range", "bad_version", "inconsistent"}


def test_huge_payload_is_refused_before_json_parsing(monkeypatch):
    def no_parsing(*args, **kwargs):
        raise AssertionError("a too-large message reached the JSON parser")

    monkeypatch.setattr(Features, "model_validate_json", no_parsing)
    huge = wire(F, dense={f"d{i}": 0.5 for i in range(10_000)})
    assert len(huge) > MAX_MESSAGE_BYTES
    for raw in (huge, huge.decode(), "é" * (MAX_MESSAGE_BYTES // 2 + 1)):  # str limit counts UTF-8 bytes
        with pytest.raises(SchemaError) as err:
            parse_features(raw)
        assert err.value.reason == "too_large"


def test_largest_legal_values_are_accepted():
    f = make_features(user_id=2**63 - 1, item_id=0, sparse={"s": [0, 2**63 - 1] * (MAX_FEATURES_PER_SLOT // 2)})
    assert parse_features(encode(f)) == f


# -- dead letters -------------------------------------------------------------------------------

def test_dead_letter_keeps_the_original_bytes_and_says_why():
    raw = b'{"schema_version": 1, "user_id": \xff'
    with pytest.raises(SchemaError) as err:
        parse_action(raw)
    record = json.loads(dead_letter(raw, "actions", err.value, now_ms=T0))
    assert record["source_topic"] == "actions" and record["reason"] == "bad_json" and record["time_ms"] == T0
    assert record["message"] == str(err.value) and record["schema_version"] == SCHEMA_VERSION
    assert base64.b64decode(record["payload_b64"]) == raw and not record["truncated"]
    assert "user_id" in record["preview"]
    assert DeadLetter.model_validate_json(dead_letter(raw, "actions", err.value)).original() == raw


def test_dead_letter_of_a_huge_payload_is_truncated_but_identifiable():
    raw = b"x" * (MAX_DEAD_LETTER_PAYLOAD + 10)
    with pytest.raises(SchemaError) as err:
        parse_features(raw)
    record = DeadLetter.model_validate_json(dead_letter(raw, "features", err.value))
    assert record.truncated and record.payload_bytes == len(raw) and record.field is None
    assert record.original() == raw[:MAX_DEAD_LETTER_PAYLOAD]
    assert record.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(dead_letter(raw, "features", err.value)) < 1024 * 1024  # fits Kafka's default message size


# -- property: anything valid survives encode -> parse unchanged --------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
tokens = st.from_regex(r"[A-Za-z0-9._:@/+-]{1,128}", fullmatch=True)
ids63 = st.integers(0, 2**63 - 1)
event_times = st.integers(schemas.EVENT_TIME_MIN_MS, schemas.EVENT_TIME_MAX_MS - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
actions = st.builds(Action, request_id=tokens, user_id=ids63, item_id=ids63, event_time=event_times,
                    action=st.sampled_from(ACTION_TYPES), watch_time_ms=st.none() | st.integers(0, 2**31 - 1))
features = st.builds(
    Features, request_id=tokens, user_id=ids63, item_id=ids63, event_time=event_times,
    position=st.integers(0, 2**31 - 1), model_version=tokens,
    sparse=st.dictionaries(names, st.lists(st.integers(0, 2**63 - 1), max_size=20), max_size=8),
    dense=st.dictionaries(names, finite, max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(actions)
def test_any_valid_action_survives_encode_parse(action):
    assert parse_action(encode(action)) == action


@settings(max_examples=300, deadline=None)
@given(features)
def test_any_valid_features_survives_encode_parse(features):
    assert parse_features(encode(features)) == features


@settings(max_examples=100, deadline=None)
@given(features, st.lists(st.sampled_from(ACTION_TYPES), max_size=4),
       st.floats(0, 1, exclude_min=True), st.integers(0, 2**63 - 1))
def test_any_valid_example_survives_encode_parse(features, actions, rate, delay):
    labels = {t: max([labels_from_action(a)[t] for a in actions], default=0) for t in TASKS}
    example = Example.from_features(features, labels, rate, delay, is_correction=any(labels.values()))
    assert parse_example(encode(example)) == example


def test_module_imports_with_pydantic_and_the_standard_library_only():
    code = ("import sys; before = set(sys.modules); import streaming.schemas; "
            "print(' '.join({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    third_party = {m for m in out.split() if not m.startswith("_sysconfigdata")} - {"streaming"}
    assert third_party <= {"pydantic", "pydantic_core", "typing_extensions", "typing_inspection", "annotated_types"}
