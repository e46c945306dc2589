"""The online trainer's Prometheus metrics, served on ``stack.host:online.metrics_port``.

| metric | type | unit, meaning |
|---|---|---|
| ``flywheel_online_examples_total`` | counter | examples trained on (replays after a recovery count again) |
| ``flywheel_online_examples_per_second`` | gauge | examples/s over the last ~5 s |
| ``flywheel_online_consumer_lag`` | gauge | examples on the topic not yet consumed (records) |
| ``flywheel_online_rolling_auc{task}`` | gauge | progressive-validation AUC over the last ``online.window`` examples |
| ``flywheel_online_recoveries_total`` | counter | rollbacks to a snapshot (the start counts as one) |
| ``flywheel_online_bad_examples_total`` | counter | examples that were not JSON (skipped, counted) |
| ``flywheel_online_poison_batches_total`` | counter | batches skipped because their gradients were NaN or infinite (their offsets stay unapplied) |
| ``flywheel_online_last_batch_timestamp_seconds`` | gauge | when the last batch was pushed to the training PS (unix s) |
| ``flywheel_online_champion_version`` | gauge | the champion version trained on (0: waiting for one) |
| ``flywheel_online_position{partition}`` | gauge | the examples offset up to which batches were pushed (the training PS's ledger ends there) |
| ``flywheel_online_arm_rate{arm,task,stat}`` | gauge | an A/B arm's positive rate per task (stat ``rate``, or ``lo``/``hi`` of its 95% interval), from the examples trained |
| ``flywheel_online_arm_impressions{arm}`` | gauge | impressions of an arm so far (sample-rate weighted) |
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class OnlineMetrics:
    """Metrics of one trainer process (see the module docstring)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.examples = Counter("flywheel_online_examples", "examples trained on", registry=r)
        self.rate = Gauge("flywheel_online_examples_per_second", "examples/s (last ~5 s)", registry=r)
        self.lag = Gauge("flywheel_online_consumer_lag", "examples not yet consumed", registry=r)
        self.auc = Gauge("flywheel_online_rolling_auc", "progressive-validation AUC", ["task"], registry=r)
        self.recoveries = Counter("flywheel_online_recoveries", "rollbacks to a snapshot", registry=r)
        self.bad = Counter("flywheel_online_bad_examples", "examples that were not JSON", registry=r)
        self.poison = Counter("flywheel_online_poison_batches", "batches skipped: NaN/Inf gradients", registry=r)
        self.last_batch = Gauge("flywheel_online_last_batch_timestamp_seconds", "last push (unix s)", registry=r)
        self.champion = Gauge("flywheel_online_champion_version", "champion version trained on", registry=r)
        self.position = Gauge("flywheel_online_position", "offset up to which batches were pushed", ["partition"],
                              registry=r)
        self.arm_rate = Gauge("flywheel_online_arm_rate", "an A/B arm's rate per task, with its 95% interval",
                              ["arm", "task", "stat"], registry=r)
        self.arm_impressions = Gauge("flywheel_online_arm_impressions", "an A/B arm's impressions", ["arm"], registry=r)
        self._seen = {"examples": 0.0, "recoveries": 0.0, "bad": 0.0, "poison": 0.0}

    def serve(self, host: str, port: int):
        """Start the /metrics HTTP server in a daemon thread; returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)

    def _add(self, counter: Counter, key: str, total: float) -> None:
        if total > self._seen[key]:
            counter.inc(total - self._seen[key])
        self._seen[key] = total

    def update(self, learner_metrics: dict[str, float], lag: int, recoveries: int, bad: int, poison: int = 0) -> None:
        """Set every metric from the learner's and the trainer's own figures (totals)."""
        self._add(self.poison, "poison", float(poison))
        self._add(self.examples, "examples", learner_metrics.get("examples", 0.0))
        self._add(self.recoveries, "recoveries", float(recoveries))
        self._add(self.bad, "bad", float(bad))
        self.rate.set(learner_metrics.get("examples_per_s", 0.0))
        self.lag.set(lag)
        for key, value in learner_metrics.items():
            if key.startswith("rolling_auc_"):
                self.auc.labels(key.removeprefix("rolling_auc_")).set(value)
            elif key.startswith("arm_") and key.endswith("_impressions"):
                self.arm_impressions.labels(key[4:-12]).set(value)
            elif key.startswith("arm_"):  # arm_<arm>_<task>_<stat>
                arm, task, stat = key[4:].rsplit("_", 2)
                self.arm_rate.labels(arm, task, stat).set(value)

    def batch_pushed(self, covered: dict[str, int] | None = None) -> None:
        """After a push the PS acknowledged; ``covered``: partition -> offset pushed up to."""
        self.last_batch.set(time.time())
        self.positions(covered or {})

    def positions(self, covered: dict[str, int]) -> None:
        """Partition -> offset pushed up to (also after a rollback, which moves it back)."""
        for partition, offset in covered.items():
            self.position.labels(str(partition)).set(offset)
