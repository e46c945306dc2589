"""Versioned event schemas, validated at every boundary: what crosses Kafka, and how.

Three schemas, one per topic: ``Action`` (``actions``: what the app did with a shown item),
``Features`` (``features``: what the model server saw when it served the item) and
``Example`` (``examples``: a Features record joined with its actions). Column *in* says
which schema holds a field (A, F, E); every field is required unless it has a default.

============== ======== ===== ============================================================ ====
field          type     in    meaning                                                      unit
============== ======== ===== ============================================================ ====
schema_version int      A F E wire version, ``SCHEMA_VERSION`` (required on the wire)      -
request_id     str      A F E the feed request that showed the item (join key)             -
user_id        int      A F E user, 0..2^63-1; the Kafka key                               -
item_id        int      A F E item, 0..2^63-1 (join key)                                   -
event_time     int      A F E epoch time: action happened / item served; 2000..2100        ms
action         str      A     impression, click, like, finish, share or skip               -
watch_time_ms  int|null A     how long the item was watched, >= 0 (default null)           ms
position       int      F E   rank of the item in the served list, 0 = top                 -
model_version  str      F E   the model that ranked the list; ``<arm>:...`` when an arm    -
                              other than the champion served it (:func:`arm_of`)
sparse         dict     F E   slot name -> feature IDs, 0..2^63-1 (default empty)          -
dense          dict     F E   name -> finite float (default empty)                         -
labels         dict     E     task -> 0/1, exactly the tasks in ``TASKS``                  -
sample_rate    float    E     probability this example was kept, 0 < r <= 1                -
sample_rates   dict     E     task -> its rate, 0 <= r <= 1, when tasks differ (default    -
                              null: every task has ``sample_rate``); 0 = not kept for it
join_delay_ms  int      E     from serving to emitting this example, >= 0                  ms
is_correction  bool     E     a late positive re-emitted after a negative (default false)  -
provisional    bool     E     sent at serving, before any outcome, as a negative (every    -
                              label 0; pipelines/online/delayed.py; default null = false);
                              a reader older than this field refuses it (extra="forbid")
============== ======== ===== ============================================================ ====

Why JSON and not Avro: Avro needs its writer's schema at every reader, which in practice
means a schema registry, and none is reachable from this stack; producers are kafka-python
and the joiner is PyFlink in thread mode, where a registry-aware codec is one more native
dependency. JSON parsed by pydantic-core (Rust) keeps up with the joiner, reads plainly in
``kafka-console-consumer``, and ``schema_version`` plus ``extra="forbid"`` give what a
registry would: an incompatible writer is refused, never silently misread.

Kafka key = ``user_id`` as a decimal string (:func:`key_of`): with equal partition counts
(config ``kafka.topics``) a user's actions, features and examples share a partition number.
Rejects go through :func:`dead_letter` with their original bytes, so nothing is lost.
Imports only pydantic 2 (and its typing_extensions) and the standard library.

Example::

    from streaming.schemas import Action, encode, key_of, parse_action
    a = Action(request_id="r1", user_id=7, item_id=42, event_time=1_700_000_000_000, action="click")
    assert parse_action(encode(a)) == a and key_of(a) == b"7"
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Annotated, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # refused before JSON parsing
MAX_FEATURES_PER_SLOT = 1024
MAX_SLOTS = 256  # sparse slots, and dense entries
MAX_DEAD_LETTER_PAYLOAD = 256 * 1024  # bytes of a reject kept whole (base64: 342 KiB < Kafka's 1 MiB)
EVENT_TIME_MIN_MS = 946_684_800_000  # 2000-01-01T00:00Z: a seconds value fails loudly
EVENT_TIME_MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00Z: a microseconds value fails loudly
INT63_MAX = 2**63 - 1  # ids stay exact in Java long, Parquet INT64 and most JSON readers

ActionType = Literal["impression", "click", "like", "finish", "share", "skip"]
ACTION_TYPES: tuple[str, ...] = get_args(ActionType)
TASK_OF_ACTION = {"click": "click", "like": "like", "finish": "finish", "share": "share"}
"""Action type -> the task it is a positive for; impression and skip are positives for none."""
TASKS: tuple[str, ...] = tuple(dict.fromkeys(TASK_OF_ACTION.values()))

Id63 = Annotated[int, Field(ge=0, le=INT63_MAX)]
FeatureId = Id63  # signed-64-bit safe: Parquet INT64 / Flink BIGINT on HDFS, and the PS keys
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:@/+-]{1,128}$")]
EventTime = Annotated[int, Field(ge=EVENT_TIME_MIN_MS, lt=EVENT_TIME_MAX_MS)]
Slot = Annotated[list[FeatureId], Field(max_length=MAX_FEATURES_PER_SLOT)]
Label = Annotated[int, Field(ge=0, le=1)]  # strict int: true and 1.0 are refused
Labels = TypedDict("Labels", {task: Label for task in TASKS})  # type: ignore[misc]
Labels.__pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[attr-defined]
Rate = Annotated[float, Field(ge=0, le=1)]
TaskRates = TypedDict("TaskRates", {task: Rate for task in TASKS})  # type: ignore[misc]
TaskRates.__pydantic_config__ = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)  # type: ignore[attr-defined]


REJECT_REASONS = ("too_large", "bad_json", "unknown_field", "missing_field", "bad_type", "out_of_range",
                  "bad_version", "inconsistent")


class SchemaError(ValueError):
    """A message broke its schema.

    ``reason`` is one of: ``too_large`` (message or a collection in it over a limit),
    ``bad_json``, ``unknown_field``, ``missing_field``, ``bad_type``, ``out_of_range``
    (a bound, a pattern or an allowed set), ``bad_version``, ``inconsistent`` (fields
    contradict each other). ``field`` is the dotted path (None for the whole message).
    """

    def __init__(self, reason: str, message: str, field: str | None = None):
        super().__init__(message)
        self.reason, self.field = reason, field


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class _Event(BaseModel):
    """Common base: frozen, unknown fields refused, no coercion (``"1"`` or ``1.0`` is no int).

    ``schema_version`` defaults to the current version in Python; on the wire it is
    required, which :func:`parse_action` and friends check.
    """

    model_config = _STRICT

    schema_version: Annotated[int, Field(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    request_id: Token
    user_id: Id63
    item_id: Id63
    event_time: EventTime


class Action(_Event):
    """One user action on one served item; ``event_time`` is when the app saw it (ms)."""

    action: ActionType
    watch_time_ms: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None


class _Served(_Event):
    """The fields Features and Example share; ``event_time`` = served at."""

    position: Annotated[int, Field(ge=0, le=2**31 - 1)]
    model_version: Token
    sparse: Annotated[dict[Name, Slot], Field(max_length=MAX_SLOTS)] = {}
    dense: Annotated[dict[Name, float], Field(max_length=MAX_SLOTS)] = {}


class Features(_Served):
    """The features the model server used for one item of one request."""


class _Joined(BaseModel):
    """What the joiner adds to Features to make an Example."""

    model_config = _STRICT

    labels: Labels
    sample_rate: Annotated[float, Field(gt=0, le=1)]
    join_delay_ms: Annotated[int, Field(ge=0, le=INT63_MAX)]
    is_correction: bool = False
    sample_rates: TaskRates | None = None  # see streaming.sampling
    # an impression sent at once as a negative, before its label window closes (the online
    # trainer's delayed feedback: pipelines/online/delayed.py); never landed for the batch
    provisional: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _Joined:
        if self.is_correction and not any(self.labels.values()):
            raise PydanticCustomError("inconsistent", "a correction re-emits a late positive, but every label is 0",
                                      {"field": "is_correction"})
        if self.provisional and (any(self.labels.values()) or self.is_correction):
            raise PydanticCustomError("inconsistent", "a provisional negative has every label 0 and is no correction",
                                      {"field": "provisional"})
        if self.sample_rates is not None:
            if max(self.sample_rates.values()) != self.sample_rate:
                raise PydanticCustomError("inconsistent", "sample_rate must be the largest of sample_rates",
                                          {"field": "sample_rates"})
            if any(self.labels[t] and r != 1 for t, r in self.sample_rates.items()):
                raise PydanticCustomError("inconsistent", "a positive task is never sampled: its rate must be 1",
                                          {"field": "sample_rates"})
        return self

    def task_rates(self) -> dict[str, float]:
        """Each task's rate: ``sample_rates``, or ``sample_rate`` for every task."""
        return dict(self.sample_rates) if self.sample_rates is not None else dict.fromkeys(TASKS, self.sample_rate)


class Example(_Joined, _Served):
    """A training example: the served features, their labels and how it was sampled and joined."""

    @classmethod
    def from_features(cls, features: Features, labels: dict[str, int], sample_rate: float,
                      join_delay_ms: int, is_correction: bool = False,
                      sample_rates: dict[str, float] | None = None, provisional: bool = False) -> Example:
        """The example for ``features`` (valid already, so not re-checked; its dicts are shared)."""
        joined = _Joined(labels=labels, sample_rate=sample_rate, join_delay_ms=join_delay_ms,
                         is_correction=is_correction, sample_rates=sample_rates, provisional=provisional or None)
        return cls.model_construct(**dict(features), **dict(joined))


class DeadLetter(BaseModel):
    """A rejected message with its original bytes (topic ``dead-letter``, key = source topic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    source_topic: str
    reason: str
    field: str | None = None
    message: str
    time_ms: int  # when it was rejected, epoch ms
    payload_b64: str  # the original bytes, or their first MAX_DEAD_LETTER_PAYLOAD bytes
    payload_bytes: int  # length of the original
    payload_sha256: str  # of the whole original, so a truncated reject is still identifiable
    truncated: bool
    preview: str  # the first 200 bytes as text, for people reading the topic

    def original(self) -> bytes:
        """The rejected bytes (a prefix of them when ``truncated``)."""
        return base64.b64decode(self.payload_b64)


TOPIC_SCHEMAS: dict[str, type[_Event]] = {"actions": Action, "features": Features, "examples": Example}
E = TypeVar("E", bound=_Event)


def labels_from_action(action_type: str) -> dict[str, int]:
    """``{task: 0/1}`` over ``TASKS`` for one action; impression and skip give all 0.

    Merge the labels of several actions on one item with ``max`` per task.

    Raises:
      SchemaError: ``out_of_range`` for an action type not in ``ACTION_TYPES``.
    """
    if action_type not in ACTION_TYPES:
        raise SchemaError("out_of_range", f"action {action_type!r} is not one of {', '.join(ACTION_TYPES)}", "action")
    positive = TASK_OF_ACTION.get(action_type)
    return {task: int(task == positive) for task in TASKS}


def encode(model: BaseModel) -> bytes:
    """Compact JSON bytes of a model (nulls left out; parsing restores them)."""
    return model.__pydantic_serializer__.to_json(model, exclude_none=True)


def key_of(model: _Event) -> bytes:
    """The Kafka key: ``user_id`` as a decimal ASCII string, so a user's events co-partition."""
    return str(model.user_id).encode("ascii")


def parse_action(raw: bytes | str) -> Action:
    """Validate one ``actions`` message. Raises SchemaError (see its reasons)."""
    return parse(Action, raw)


def parse_features(raw: bytes | str) -> Features:
    """Validate one ``features`` message. Raises SchemaError (see its reasons)."""
    return parse(Features, raw)


def parse_example(raw: bytes | str) -> Example:
    """Validate one ``examples`` message. Raises SchemaError (see its reasons)."""
    return parse(Example, raw)


def wire_schema(schema: type[_Event]) -> dict:
    """``schema``'s JSON schema as on the wire, where ``schema_version`` is required (what
    :func:`parse` checks), for specs that publish it (the model server's OpenAPI)."""
    out = schema.model_json_schema()
    out["properties"]["schema_version"].pop("default", None)
    out["required"] = ["schema_version", *out.get("required", [])]
    return out


def parse(schema: type[E], raw: bytes | str) -> E:
    """Validate one Kafka value (bytes, or str) against ``schema``; size is checked first.

    Raises:
      SchemaError: with ``reason``, the field path, the value and what was expected.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")  # a lone surrogate then fails as bad_json
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SchemaError("too_large", f"{schema.__name__} message is {len(raw)} bytes; limit {MAX_MESSAGE_BYTES}")
    try:
        model = schema.model_validate_json(raw)
    except ValidationError as exc:
        raise _schema_error(schema, exc) from None
    if "schema_version" not in model.__pydantic_fields_set__:
        raise SchemaError("bad_version", f"{schema.__name__}.schema_version = nothing: expected {SCHEMA_VERSION}; "
                          "every message carries it", "schema_version")
    return model


_REASON_OF_TYPE = {
    "json_invalid": "bad_json", "json_type": "bad_json", "model_type": "bad_json",
    "extra_forbidden": "unknown_field", "missing": "missing_field", "inconsistent": "inconsistent",
    "too_long": "too_large", "string_too_long": "too_large",
    **dict.fromkeys(["greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number",
                     "literal_error", "string_pattern_mismatch", "string_too_short", "too_short"],
                    "out_of_range"),
}


def _schema_error(schema: type[BaseModel], exc: ValidationError) -> SchemaError:
    """The first problem of a ValidationError as a SchemaError naming field, value and expectation."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    reason = _REASON_OF_TYPE.get(err["type"], "bad_type")
    field = ".".join(str(p) for p in err["loc"]) or (err.get("ctx") or {}).get("field")
    value = repr(err["input"].get(field) if reason == "inconsistent" else err.get("input"))
    value = value if len(value) <= 80 else value[:77] + "..."
    if field == "schema_version":
        reason, expected = "bad_version", f"expected {SCHEMA_VERSION} (an int), the only version this reader knows"
    elif reason == "bad_json":
        expected = "one JSON object" if err["type"] == "model_type" else err["msg"]
    elif reason == "unknown_field":
        known = TASKS if field.startswith(("labels.", "sample_rates.")) else schema.model_fields
        expected = "no such field; known: " + ", ".join(known)
    elif reason == "missing_field":
        expected, value = "a value (field required)", "nothing"
    elif reason == "inconsistent":
        expected = err["msg"]
    else:
        expected = err["msg"].replace("Input should be", "expected").replace("String should", "expected to")
    if field == "event_time" and reason == "out_of_range" and err["input"] > 0:
        expected += " (epoch milliseconds; was seconds or microseconds sent?)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    where = f"{schema.__name__}.{field}" if field else f"{schema.__name__} message"
    return SchemaError(reason, f"{where} = {value}: {expected}{more}", field)


def dead_letter(raw: bytes | str, topic: str, error: SchemaError, now_ms: int | None = None) -> bytes:
    """The :class:`DeadLetter` JSON for a reject; produce it with key ``topic.encode()``.

    Args:
      raw: the Kafka value exactly as received (use Flink's ByteArraySchema to keep bytes exact).
      topic: the topic it came from.
      error: why it was rejected.
      now_ms: rejection time, epoch ms (default: now).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    kept = data[:MAX_DEAD_LETTER_PAYLOAD]
    record = DeadLetter(
        source_topic=topic, reason=error.reason, field=error.field, message=str(error),
        time_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        payload_b64=base64.b64encode(kept).decode("ascii"), payload_bytes=len(data),
        payload_sha256=hashlib.sha256(data).hexdigest(), truncated=len(kept) < len(data),
        preview=data[:200].decode("utf-8", "replace"),
    )
    return encode(record)


def arm_of(model_version: str | None) -> str:
    """The A/B arm (serving/arms.py) that served a list, read off its ``model_version``:
    ``popularity:24h`` -> ``popularity``; a bare version (``flywheel/7``) -> ``champion``."""
    if model_version and ":" in model_version:
        return model_version.split(":", 1)[0]
    return "champion"
