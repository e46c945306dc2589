"""The demo page's live panels: each loop component's figures, read by the model server from
the component's own metrics (Prometheus endpoints; the joiner's from Flink's REST API), so the
browser talks to one origin only.

Each read scrapes every source in parallel with a short timeout; a source that does not answer
makes its panel ``up: false`` with the reason, by name, and the other panels still fill. Rates
and latency percentiles are over the window between the oldest kept read (at most
``window_s`` old) and this one; reads are cached ``min_interval_s`` so that many open pages
do not multiply the scrapes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from flywheel import flinkjobs
from flywheel.config import FlywheelConfig
from flywheel.prometheus import fetch, histogram_quantiles, value

TIMEOUT_S = 1.0
log = logging.getLogger(__name__)


def fetch_samples(url: str, timeout_s: float = TIMEOUT_S) -> list:
    """:func:`flywheel.prometheus.fetch` with the panels' timeout."""
    return fetch(url, timeout_s)


def flink_join(cfg: FlywheelConfig, job_name: str, timeout_s: float = TIMEOUT_S) -> dict:
    """The running joiner's state, join counters and gauges, and its last checkpoint, from
    Flink's REST API. Raises ``requests.RequestException``, or LookupError when no joiner runs."""
    base, http = cfg.flink_url, flinkjobs.rest_session(cfg)
    jobs = http.get(f"{base}/jobs/overview", timeout=timeout_s).json()["jobs"]
    live = [j for j in jobs if j["name"] == job_name and j["state"] not in ("FINISHED", "FAILED", "CANCELED")]
    if not live:
        raise LookupError(f"no running Flink job named {job_name!r} (start it: make demo, or flywheel demo)")
    job = live[0]
    out: dict = {"state": job["state"], "job_id": job["jid"]}
    detail = http.get(f"{base}/jobs/{job['jid']}", timeout=timeout_s).json()
    for vertex in detail.get("vertices", []):
        url = f"{base}/jobs/{job['jid']}/vertices/{vertex['id']}/metrics"
        names = [m["id"] for m in http.get(url, timeout=timeout_s).json() if ".flywheel.join." in m["id"]]
        if names:
            for m in http.get(url, params={"get": ",".join(names)}, timeout=timeout_s).json():
                name = m["id"].rsplit(".", 1)[-1]
                out[name] = out.get(name, 0.0) + float(m["value"])
    out["emitted"] = sum(out.get(k, 0.0) for k in ("positives", "corrections", "negatives_kept", "negatives_explicit",
                                                    "provisional"))
    checkpoints = http.get(f"{base}/jobs/{job['jid']}/checkpoints", timeout=timeout_s).json()
    latest = (checkpoints.get("latest") or {}).get("completed") or {}
    out["checkpoint_at"] = latest.get("latest_ack_timestamp", 0) / 1000 or None
    out["checkpoint_ms"] = latest.get("end_to_end_duration")
    return out


class Panels:
    """Reads every panel; ``own`` returns the model server's own samples (no HTTP to itself)."""

    def __init__(self, cfg: FlywheelConfig, own, loader, job_name: str, window_s: float = 60,
                 min_interval_s: float = 1.0):
        host, ps = cfg.stack.host, cfg.paramserver
        self.cfg, self.own, self.loader, self.job_name = cfg, own, loader, job_name
        self.urls = {
            "trainer": f"http://{host}:{cfg.online.metrics_port}/metrics",
            "simulator": f"http://{host}:{cfg.simulator.metrics_port}/metrics",
            **{f"ps-{role}-{shard}": f"http://{host}:{ps.metrics_port_of(role, shard)}/metrics"
               for role in ("training", "serving") for shard in range(ps.shards)},
        }
        self.window_s, self.min_interval_s = window_s, min_interval_s
        self._reads: deque[tuple[float, dict]] = deque()
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(self.urls) + 1, thread_name_prefix="panels")

    def read(self) -> dict:
        with self._lock:
            now = time.time()
            if self._cached and now - self._cached[0] < self.min_interval_s:
                return self._cached[1]
            got = self._scrape()
            self._reads.append((now, got))
            while len(self._reads) > 2 and now - self._reads[1][0] >= self.window_s:
                self._reads.popleft()
            result = {"time": now, "window_s": round(now - self._reads[0][0], 1), "panels": self._panels(now, got),
                      "links": {"Airflow": self.cfg.airflow_url, "MLflow": self.cfg.mlflow_url,
                                "Flink": self.cfg.flink_url}}
            self._cached = (now, result)
            return result

    def _scrape(self) -> dict:
        """{source: samples, or an Exception}; never raises, never waits past the timeouts."""
        futures = {name: self._pool.submit(fetch_samples, url) for name, url in self.urls.items()}
        futures["joiner"] = self._pool.submit(flink_join, self.cfg, self.job_name)
        out: dict = {"server": self.own()}
        for name, future in futures.items():
            try:
                out[name] = future.result(timeout=TIMEOUT_S * 6)
            except Exception as exc:  # noqa: BLE001 - a down component is a panel saying so
                out[name] = exc
        return out

    def _rate(self, source: str, name: str, now: float, current: float, **labels) -> float | None:
        """Per second over the window, from the oldest read where ``source`` answered."""
        for then, got in self._reads:
            past = got.get(source)
            if then < now and not isinstance(past, Exception) and past is not None:
                before = value(past, name, **labels) if not isinstance(past, dict) else past.get(name)
                if before is not None:
                    return max(0.0, (current - before) / (now - then))
        return None

    def _oldest(self, source: str):
        for _, got in self._reads:
            past = got.get(source)
            if past is not None and not isinstance(past, Exception):
                return past
        return None

    def _panels(self, now: float, got: dict) -> list[dict]:
        builders = [("collector", "Model server and event collector", lambda: self._collector(now, got["server"])),
                    ("joiner", "Joiner (Flink)", lambda: self._joiner(now, got["joiner"])),
                    ("trainer", "Online trainer", lambda: self._trainer(now, got["trainer"])),
                    ("arms", "A/B test (rates per arm, 95% interval)", lambda: self._arms(got["trainer"])),
                    ("sync", "Training → serving sync", lambda: self._sync(now, got)),
                    ("freshness", "Simulator and freshness", lambda: self._freshness(now, got["simulator"])),
                    ("champion", "Champion model", self._champion)]
        out = []
        for name, title, build in builders:
            try:
                out.append(build())
            except Exception as exc:  # noqa: BLE001 - one panel's figures failing never blanks the page
                log.exception("the %s panel failed", name)
                out.append({"name": name, "title": title, "up": False, "figures": {},
                            "error": f"{title}: its figures could not be read ({type(exc).__name__}: {exc})"[:300]})
        return out

    @staticmethod
    def _down(name: str, title: str, error: Exception) -> dict:
        reason = str(error) if isinstance(error, LookupError) else f"{type(error).__name__}: {error}"
        return {"name": name, "title": title, "up": False, "error": f"{title} is down or unreachable: {reason}"[:300],
                "figures": {}}

    def _collector(self, now: float, s: list) -> dict:
        name = "flywheel_serving_events_total"
        accepted = value(s, name, result="accepted")
        lat = histogram_quantiles(self._oldest("server") or [], s, "flywheel_serving_feed_latency_seconds", "stage")
        total = lat.get("total", {})
        return {"name": "collector", "title": "Model server and event collector", "up": True, "figures": {
            "events_per_s": self._rate("server", name, now, accepted, result="accepted"),
            "events_accepted": accepted,
            "events_invalid": value(s, name, result="invalid"),
            "feeds_per_s": self._rate("server", "flywheel_serving_feed_requests_total", now,
                                      value(s, "flywheel_serving_feed_requests_total", status="200"), status="200"),
            "feed_p50_ms": total.get("p50_ms"), "feed_p99_ms": total.get("p99_ms"),
        }}

    def _joiner(self, now: float, j) -> dict:
        if isinstance(j, Exception):
            return self._down("joiner", "Joiner (Flink)", j)
        return {"name": "joiner", "title": "Joiner (Flink)", "up": True, "figures": {
            "state": j["state"], "examples_per_s": self._rate("joiner", "emitted", now, j["emitted"]),
            "positives": j.get("positives"), "negatives_kept": j.get("negatives_kept"),
            "negatives_dropped": j.get("negatives_dropped"), "provisional_negatives": j.get("provisional"),
            "join_latency_ms": self._mean_latency(now, j),
            "last_checkpoint_age_s": round(now - j["checkpoint_at"], 1) if j.get("checkpoint_at") else None,
            "checkpoint_ms": j.get("checkpoint_ms"),
        }}

    def _mean_latency(self, now: float, j: dict) -> float | None:
        """Mean join latency (ms) over the window; since the job started if no join in it."""
        total, joins = j.get("latency_ms_sum", 0.0), j.get("latency_joins", 0.0)
        past = self._oldest("joiner") or {}  # its counters may not exist yet: Flink reports them late
        window = joins - past.get("latency_joins", 0.0)
        if past and window > 0:
            return round((total - past.get("latency_ms_sum", 0.0)) / window, 1)
        return round(total / joins, 1) if joins else None

    def _trainer(self, now: float, s) -> dict:
        if isinstance(s, Exception):
            return self._down("trainer", "Online trainer", s)
        last = value(s, "flywheel_online_last_batch_timestamp_seconds")
        return {"name": "trainer", "title": "Online trainer", "up": True, "figures": {
            "examples_per_s": value(s, "flywheel_online_examples_per_second"),
            "examples": value(s, "flywheel_online_examples_total"),
            "consumer_lag": value(s, "flywheel_online_consumer_lag"),
            **{f"auc_{t}": (value(s, "flywheel_online_rolling_auc", task=t) or None) for t in ("click", "like", "finish")},
            "last_batch_age_s": round(now - last, 1) if last else None,
            "champion_version": value(s, "flywheel_online_champion_version") or None,
        }}

    def _arms(self, s) -> dict:
        """Each serving arm's share of users and its rates per task from the joined examples
        (the online trainer's ``flywheel_online_arm_*``)."""
        title = "A/B test (rates per arm, 95% interval)"
        if isinstance(s, Exception):
            return {**self._down("arms", title, s), "error": f"A/B test: the online trainer measures the arms and "
                                                              f"is down or unreachable ({type(s).__name__})"}
        figures: dict = {f"{arm}_users_share": share for arm, share in self.cfg.serving.traffic.items()}
        arms = sorted({x.labels["arm"] for x in s if x.name == "flywheel_online_arm_impressions"})
        for arm in arms:
            figures[f"{arm}_impressions"] = round(value(s, "flywheel_online_arm_impressions", arm=arm))
            for task in ("click", "like"):
                rate = [value(s, "flywheel_online_arm_rate", arm=arm, task=task, stat=k) for k in ("rate", "lo", "hi")]
                if any(x.name == "flywheel_online_arm_rate" and x.labels == {"arm": arm, "task": task, "stat": "rate"}
                       for x in s):
                    figures[f"{arm}_{task}_rate"] = f"{rate[0]:.2%} ({rate[1]:.2%}–{rate[2]:.2%})"
        return {"name": "arms", "title": title, "up": True, "figures": figures}

    def _sync(self, now: float, got: dict) -> dict:
        shards = [k for k in got if k.startswith("ps-")]
        down = [k for k in shards if isinstance(got[k], Exception)]
        if down:
            return self._down("sync", "Parameter servers", RuntimeError(f"{', '.join(down)} not answering"))
        shipped = [value(got[k], "flywheel_ps_sync_last_timestamp_seconds") for k in shards if "training" in k]
        applied = [value(got[k], "flywheel_ps_sync_last_timestamp_seconds") for k in shards if "serving" in k]
        return {"name": "sync", "title": "Training → serving sync", "up": True, "figures": {
            "lag_messages": sum(value(got[k], "flywheel_ps_sync_lag_messages") for k in shards if "serving" in k),
            "last_shipped_age_s": round(now - max(shipped), 1) if shipped and max(shipped) else None,
            "last_applied_age_s": round(now - max(applied), 1) if applied and max(applied) else None,
            "serving_rows": sum(value(got[k], "flywheel_ps_rows") for k in shards if "serving" in k),
            "training_rows": sum(value(got[k], "flywheel_ps_rows") for k in shards if "training" in k),
        }}

    def _freshness(self, now: float, s) -> dict:
        if isinstance(s, Exception):
            return self._down("freshness", "Simulator and freshness", s)
        window = histogram_quantiles(self._oldest("simulator") or [], s, "flywheel_freshness_seconds").get("", {})
        if not window.get("count"):  # no probe in the window yet: since the simulator started
            window = histogram_quantiles([], s, "flywheel_freshness_seconds").get("", {})

        def ms(key):  # ms -> s; a string (">x", past the last bucket) as it is
            got = window.get(key)
            return round(got / 1000, 2) if isinstance(got, float) else got
        return {"name": "freshness", "title": "Simulator and freshness", "up": True, "figures": {
            "freshness_p50_s": ms("p50_ms"), "freshness_p99_s": ms("p99_ms"), "probes": window.get("count"),
            "feeds_per_s": self._rate("simulator", "flywheel_simulator_feed_requests_total", now,
                                      value(s, "flywheel_simulator_feed_requests_total")),
            "actions_per_s": self._rate("simulator", "flywheel_simulator_actions_total", now,
                                        value(s, "flywheel_simulator_actions_total")),
        }}

    def _champion(self) -> dict:
        current = self.loader.current
        if current is None:
            return {"name": "champion", "title": "Champion model", "up": False, "figures": {},
                    "error": "no champion loaded yet: run the daily retrain (make retrain)"}
        return {"name": "champion", "title": "Champion model", "up": True, "figures": {
            "version": current.version, "trained_for": current.meta.get("date"),
            "registered_at": current.registered_at, "loaded_at": current.loaded_at,
        }}
