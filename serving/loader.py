"""The serving side of publishing: follow the ``champion`` alias and swap in its dense weights.

A model server holds one :class:`ChampionLoader`. ``poll()`` asks MLflow which version holds
the alias; when it changed, the version's bundle is downloaded and rebuilt (ranker and
retriever over the serving PS, whose embeddings the publish step reset to the version's
snapshot), and swapped in at once: a request sees the old model or the new one, never a mix.
``start()`` polls in a daemon thread.

Example::

    loader = ChampionLoader(cfg, source=PSClient.from_config(cfg, role="serving"))
    loader.poll()
    model = loader.current          # Loaded(version, ranker, retriever, meta) or None
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass

from flywheel.config import FlywheelConfig
from flywheel.secrets import tracking_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    version: str
    ranker: object  # models.ranking.RankingTrainer
    retriever: object  # models.retrieval.DeepRetrievalTrainer
    meta: dict
    loaded_at: float
    registered_at: float | None = None  # when MLflow registered this version (unix s)


class ChampionLoader:
    """Keeps ``current`` = the model version holding ``alias`` (see the module docstring)."""

    def __init__(self, cfg: FlywheelConfig, source, alias: str = "champion", interval_s: float = 10.0):
        self.cfg, self.source, self.alias, self.interval_s = cfg, source, alias, interval_s
        self.current: Loaded | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Load the alias's version if it is new; True when a new model was swapped in."""
        from mlflow import MlflowClient

        from models.bundle import load_bundle
        from pipelines.batch.publish import champion

        version = champion(self.cfg) if self.alias == "champion" else \
            MlflowClient(tracking_uri(self.cfg)).get_model_version_by_alias(self.cfg.batch.model_name, self.alias)
        if version is None or (self.current and self.current.version == str(version.version)):
            return False
        with tempfile.TemporaryDirectory() as tmp:
            folder = MlflowClient(tracking_uri(self.cfg)).download_artifacts(version.run_id, "bundle", tmp)
            ranker, retriever, meta = load_bundle(folder, self.source)
        registered = getattr(version, "creation_timestamp", None)
        self.current = Loaded(str(version.version), ranker, retriever, meta, time.time(),
                              registered / 1000 if registered else None)
        log.info("serving model version %s (trained for %s)", version.version, meta.get("date"))
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # keep serving the loaded model; say why, try again next round
                self.errors += 1
                log.exception("could not load the %s model; still serving version %s", self.alias,
                              self.current.version if self.current else None)

    def start(self) -> ChampionLoader:
        self._thread = threading.Thread(target=self._loop, name="champion-loader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
