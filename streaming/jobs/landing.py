"""Landing: committed ``examples`` from Kafka to HDFS as Parquet, in hourly partitions.

Added to the joiner's job (``--land-path``) as Flink SQL, so it runs in the JVM with no
Python per record: a Kafka source reading the examples topic ``read_committed`` with the JSON
format (typed columns, the :class:`~streaming.schemas.Example` schema), into the filesystem
connector with ``'format' = 'parquet'``::

    <land-path>/dt=YYYY-MM-DD/hour=HH/part-*.parquet     (UTC)
    <land-path>/dt=YYYY-MM-DD/hour=HH/_SUCCESS           the hour is complete

- **Which hour**: the example's time, ``event_time + join_delay_ms`` (when the joiner emitted
  it: the action's time for a positive, the end of the label window for a negative), which
  mostly follows the joiner's watermark. An example behind the landing watermark (a late
  action, or a negative emitted after newer positives) lands in the watermark's hour
  instead: never in an hour already marked complete, so a day read once is read whole.
- **Rolled on checkpoint**: Parquet files are closed at each checkpoint, when they become
  visible (in-progress files are hidden dot-files); with the Kafka offsets in the same
  checkpoint, each committed example lands exactly once.
- **Complete hours**: ``_SUCCESS`` is written when the watermark (example time minus
  ``--land-lateness-s``) passes the end of the hour; the daily batch reads a day whose 24 hours
  are complete (an hour without examples has no folder).
- **Final examples only**: ``provisional`` negatives (the online trainer's delayed feedback,
  sent before the label window closes) are left out; the batch learns from final labels.
- Records that are not valid JSON of this shape are skipped by the JSON format (only the
  joiner writes ``examples``, after validating; see its dead letters for rejected input).
"""

from __future__ import annotations

from pyflink.table import StatementSet, StreamTableEnvironment

from streaming.schemas import TASKS

# The Example schema as Flink SQL columns (ids are 0..2^63-1, so BIGINT holds them exactly).
EXAMPLE_COLUMNS = [
    ("schema_version", "INT"), ("request_id", "STRING"), ("user_id", "BIGINT"), ("item_id", "BIGINT"),
    ("event_time", "BIGINT"), ("`position`", "INT"), ("model_version", "STRING"),
    ("sparse", "MAP<STRING, ARRAY<BIGINT>>"), ("dense", "MAP<STRING, DOUBLE>"),
    ("labels", "ROW<" + ", ".join(f"`{task}` INT" for task in TASKS) + ">"),
    ("sample_rate", "DOUBLE"), ("join_delay_ms", "BIGINT"), ("is_correction", "BOOLEAN"),
    ("sample_rates", "ROW<" + ", ".join(f"`{task}` DOUBLE" for task in TASKS) + ">"),  # null: all = sample_rate
]


def sql_options(options: dict[str, str]) -> str:
    """The body of a SQL ``WITH (...)`` clause (quotes doubled, as SQL escapes them)."""
    def quoted(text) -> str:
        return "'" + str(text).replace("'", "''") + "'"
    return ", ".join(f"{quoted(k)} = {quoted(v)}" for k, v in options.items())


def land_examples(t_env: StreamTableEnvironment, statements: StatementSet, *, bootstrap: str, topic: str,
                  group: str, login: dict[str, str] | None = None, path: str, lateness_s: int = 60, idle_timeout_s: float = 30) -> None:
    """Add the landing INSERT to ``statements`` (see the module docstring)."""
    # DATE_FORMAT of a TIMESTAMP_LTZ uses the session zone: partitions are UTC hours
    t_env.get_config().set("table.local-time-zone", "UTC")
    columns = ", ".join(f"{name} {kind}" for name, kind in EXAMPLE_COLUMNS)
    source = {
        "connector": "kafka", "topic": topic, "properties.bootstrap.servers": bootstrap,
        "properties.group.id": group, "properties.isolation.level": "read_committed",
        "scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest",
        "scan.watermark.idle-timeout": f"{int(idle_timeout_s * 1000)} ms",
        "format": "json", "json.ignore-parse-errors": "true", **(login or {}),
    }
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE landing_source ({columns}, provisional BOOLEAN, "
        "example_time AS TO_TIMESTAMP_LTZ(event_time + join_delay_ms, 3), "
        f"WATERMARK FOR example_time AS example_time - INTERVAL '{int(lateness_s)}' SECOND"
        f") WITH ({sql_options(source)})")
    sink = {
        "connector": "filesystem", "path": path, "format": "parquet",
        "sink.partition-commit.trigger": "partition-time",
        "partition.time-extractor.timestamp-pattern": "$dt $hour:00:00",
        "sink.partition-commit.delay": "1 h",
        "sink.partition-commit.watermark-time-zone": "UTC",
        "sink.partition-commit.policy.kind": "success-file",
    }
    t_env.execute_sql(f"CREATE TEMPORARY TABLE landing_sink ({columns}, dt STRING, `hour` STRING) "
                      f"PARTITIONED BY (dt, `hour`) WITH ({sql_options(sink)})")
    names = ", ".join(name for name, _ in EXAMPLE_COLUMNS)
    # a late example (behind the watermark: its hour may be complete already) lands in the
    # watermark's hour instead, so a batch that read a complete hour never misses it
    landed = ("CASE WHEN example_time < CURRENT_WATERMARK(example_time) "
              "THEN CURRENT_WATERMARK(example_time) ELSE example_time END")
    statements.add_insert_sql(
        f"INSERT INTO landing_sink SELECT {names}, DATE_FORMAT(landed, 'yyyy-MM-dd'), DATE_FORMAT(landed, 'HH') "
        f"FROM (SELECT *, {landed} AS landed FROM landing_source WHERE provisional IS NOT TRUE)")
