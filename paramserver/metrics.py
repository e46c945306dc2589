"""Prometheus metrics of one parameter-server shard process, read from its live state at
each scrape (a custom collector: nothing is copied on the pull or push path).

Served on ``stack.host`` at ``paramserver.metrics_port(role, shard)``:

| metric | type | meaning |
|---|---|---|
| ``flywheel_ps_up`` | gauge | 1 while the shard serves |
| ``flywheel_ps_uptime_seconds`` | gauge | since the process started |
| ``flywheel_ps_pulled_ids_per_second``, ``flywheel_ps_pushed_ids_per_second`` | gauge | IDs per second over the last few seconds |
| ``flywheel_ps_duplicate_pushes_total`` | counter | pushes recognised as retries and not applied again |
| ``flywheel_ps_unauthenticated_total`` | counter | calls refused for a missing or wrong bearer token (``paramserver.require_token``) |
| ``flywheel_ps_rows{table}``, ``flywheel_ps_bytes{table}`` | gauge | rows held; bytes (rows + index + admission sketch) |
| ``flywheel_ps_admitted_total{table}``, ``flywheel_ps_evicted_total{table}`` | counter | rows created after admission; rows expired |
| ``flywheel_ps_sync_rows_total`` | counter | training: rows shipped to the deltas topic; serving: rows applied from it |
| ``flywheel_ps_sync_last_timestamp_seconds`` | gauge | training: last delta shipped; serving: last delta applied (unix s) |
| ``flywheel_ps_sync_lag_messages`` | gauge | serving: delta messages on the topic not yet applied |
| ``flywheel_ps_sync_bad_messages_total`` | counter | serving: delta messages skipped as undecodable or invalid |

Every series has the labels ``role`` and ``shard``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class PSCollector:
    """Reads ``server.stats()`` (a :class:`paramserver.server.ParamServer`) at each scrape."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        s = self.server.stats()
        base = {"role": s["role"], "shard": str(s["shard"])}
        keys, values = list(base), list(base.values())

        def gauge(name, doc, value, **extra):
            m = GaugeMetricFamily(name, doc, labels=keys + list(extra))
            m.add_metric(values + list(extra.values()), value)
            return m

        yield gauge("flywheel_ps_up", "1 while the shard serves", 1)
        yield gauge("flywheel_ps_uptime_seconds", "seconds since the shard started", s["uptime_s"])
        yield gauge("flywheel_ps_pulled_ids_per_second", "IDs pulled per second (recent)", s["pulls_per_s"])
        yield gauge("flywheel_ps_pushed_ids_per_second", "IDs pushed per second (recent)", s["pushes_per_s"])
        dup = CounterMetricFamily("flywheel_ps_duplicate_pushes", "retried pushes not applied again", labels=keys)
        dup.add_metric(values, s["duplicate_pushes"])
        yield dup
        refused = CounterMetricFamily("flywheel_ps_unauthenticated", "calls refused: no or a wrong bearer token",
                                      labels=keys)
        refused.add_metric(values, s.get("unauthenticated", 0))
        yield refused
        per_table = {
            "rows": GaugeMetricFamily("flywheel_ps_rows", "rows held", labels=keys + ["table"]),
            "bytes": GaugeMetricFamily("flywheel_ps_bytes", "bytes held: rows, index, admission sketch",
                                       labels=keys + ["table"]),
            "admitted": CounterMetricFamily("flywheel_ps_admitted", "rows created after admission",
                                            labels=keys + ["table"]),
            "evicted": CounterMetricFamily("flywheel_ps_evicted", "rows expired", labels=keys + ["table"]),
        }
        for table, t in s["tables"].items():
            for field, family in per_table.items():
                family.add_metric(values + [table], t[field])
        yield from per_table.values()
        sync = s.get("sync") or {}
        shipped = sync.get("rows_shipped", sync.get("rows_applied"))
        if shipped is not None:
            rows = CounterMetricFamily("flywheel_ps_sync_rows", "rows shipped (training) or applied (serving)",
                                       labels=keys)
            rows.add_metric(values, shipped)
            yield rows
        last = sync.get("last_sync", sync.get("last_applied"))
        if last is not None:
            yield gauge("flywheel_ps_sync_last_timestamp_seconds", "last delta shipped or applied (unix s)", last)
        if sync.get("lag") is not None:
            yield gauge("flywheel_ps_sync_lag_messages", "delta messages not yet applied", sync["lag"])
        if "bad_messages" in sync:
            bad = CounterMetricFamily("flywheel_ps_sync_bad_messages", "delta messages skipped", labels=keys)
            bad.add_metric(values, sync["bad_messages"])
            yield bad


def serve_metrics(server, host: str, port: int):
    """Start the shard's /metrics endpoint (a daemon thread); returns its HTTP server
    (``shutdown()`` stops it)."""
    registry = CollectorRegistry()
    registry.register(PSCollector(server))
    http, _ = start_http_server(port, addr=host, registry=registry)
    return http
