"""Prometheus metrics of the simulator, in a registry of its own (several simulators, e.g. in
tests, never share counters).

=========================================== ========= ====================================
metric                                      labels    meaning
=========================================== ========= ====================================
flywheel_simulator_feed_requests_total      status    GET /feed attempts by HTTP status
                                                      (``error``: no response)
flywheel_simulator_actions_total            action    actions the server accepted (202)
flywheel_simulator_late_actions_total       -         of those, posted late
flywheel_simulator_shown_total              arm       items shown, by the A/B arm that served them
flywheel_simulator_reactions_total          arm,      the simulated users' actions on them
                                            action    (what they did, posted or not)
flywheel_simulator_errors_total             kind      ``no_model`` (feed 503), ``feed_unavailable``
                                                      (feed 503 with Retry-After: shed, or the
                                                      serving PS down), ``unavailable``
                                                      (events 503), ``connection``,
                                                      ``timeout``, ``client_error`` (4xx: a
                                                      simulator bug), ``server_error`` (5xx)
flywheel_simulator_feed_latency_seconds     -         GET /feed round trip, seconds
flywheel_simulator_drifted                  -         1 once the users' tastes have drifted
=========================================== ========= ====================================
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)  # seconds


class SimulatorMetrics:
    """The simulator's counters and histogram, registered in ``registry`` (default: a new one)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.feed_requests = Counter("flywheel_simulator_feed_requests", "GET /feed attempts by HTTP status",
                                     ["status"], registry=r)
        self.actions = Counter("flywheel_simulator_actions", "actions accepted by the server", ["action"], registry=r)
        self.late_actions = Counter("flywheel_simulator_late_actions", "accepted actions that were posted late",
                                    registry=r)
        self.errors = Counter("flywheel_simulator_errors", "failed requests by kind", ["kind"], registry=r)
        self.feed_latency = Histogram("flywheel_simulator_feed_latency_seconds", "GET /feed round trip",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.shown = Counter("flywheel_simulator_shown", "items shown, by A/B arm", ["arm"], registry=r)
        self.reactions = Counter("flywheel_simulator_reactions", "actions on shown items, by A/B arm",
                                 ["arm", "action"], registry=r)
        self.drifted = Gauge("flywheel_simulator_drifted", "1 once the users' tastes have drifted", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample, e.g. ``value("flywheel_simulator_actions_total", action="click")``
        (0 when it has not been counted yet)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def rates_by_arm(self) -> dict[str, dict[str, float]]:
        """{arm: {shown, click_rate, like_rate}}: each arm's share of shown items the users
        clicked and liked (their own judgement of held-out items, independent of the joiner)."""
        out: dict[str, dict[str, float]] = {}
        for s in next(iter(self.shown.collect())).samples:
            if s.name.endswith("_total") and s.value > 0:
                arm = s.labels["arm"]
                out[arm] = {"shown": s.value, **{f"{a}_rate": self.value("flywheel_simulator_reactions_total", arm=arm,
                                                                           action=a) / s.value for a in ("click", "like")}}
        return out

    def summary(self) -> dict[str, float]:
        """Every counter sample, by name and labels: what a person reads at the end of a run."""
        out = {}
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                    out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def serve(self, host: str, port: int) -> WSGIServer:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; ``shutdown()`` the result to stop.

        Raises:
          OSError: the port is taken; the message names the config key to change.
        """
        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve simulator metrics on {host}:{port} ({exc.strerror}): stop "
                          "what listens there or set simulator.metrics_port (FLYWHEEL__SIMULATOR__METRICS_PORT)"
                          ) from None
        return server
