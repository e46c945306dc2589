"""Client of the parameter servers, for trainers (training PS) and model servers (serving PS).

``pull``/``push`` split a batch by shard and call every shard in parallel, each with a
timeout and retries on transient errors; a push, and a pull with ``insert``, carry one request
id per shard, reused on retry, so the PS applies the push, or counts the pulled IDs toward
admission, at most once.

Example::

    ps = PSClient.from_config(cfg, role="training")
    emb = ps.pull("user_id", ids, insert=True)     # [n, dim]
    ps.push("user_id", ids, grads)                 # optimizer runs on the PS
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.flight as flight
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from paramserver.sharding import split
from paramserver.table import as_ids
from paramserver.wire import decode, encode

TRANSIENT = (flight.FlightUnavailableError, flight.FlightTimedOutError, flight.FlightCancelledError)


class PSClient:
    """Talks to every shard of one PS role."""

    def __init__(self, addresses: list[str], dims: dict[str, int], timeout_s: float = 5.0, retries: int = 3,
                 token: str | None = None):
        self.addresses, self.dims = addresses, dims
        self.shards = len(addresses)
        self._clients = [flight.FlightClient(a) for a in addresses]
        # the shards' bearer token (paramserver.require_token), on every call
        self._headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        self._options = flight.FlightCallOptions(timeout=timeout_s, headers=self._headers)
        self._pool = ThreadPoolExecutor(max_workers=self.shards, thread_name_prefix="ps-client")
        self._incarnations: dict[int, str] = {}
        self._retrying = retry(
            retry=retry_if_exception_type(TRANSIENT), stop=stop_after_attempt(retries + 1),
            wait=wait_exponential(multiplier=0.05, max=1.0), reraise=True,
        )(self._call_once)

    @classmethod
    def from_config(cls, cfg, role: str = "training") -> PSClient:
        from flywheel import secrets

        ps = cfg.paramserver
        host = cfg.stack.host_of(f"paramserver_{role}")
        return cls([f"grpc+tcp://{host}:{ps.port(role, i)}" for i in range(ps.shards)],
                   {name: t.dim for name, t in ps.tables.items()}, ps.rpc_timeout_s, ps.rpc_retries,
                   token=secrets.ps_token(cfg))

    def call_action(self, shard: int, kind: str, body, timeout_s: float | None = None):
        """One Flight action on one shard, retried on transient errors; returns the result
        body (bytes; an Arrow buffer for ``pull``)."""
        return self._retrying(shard, kind, body, timeout_s)

    def _call_once(self, shard: int, kind: str, body, timeout_s: float | None = None):
        options = self._options if timeout_s is None else flight.FlightCallOptions(timeout=timeout_s,
                                                                                   headers=self._headers)
        results = list(self._clients[shard].do_action(flight.Action(kind, body), options))
        if kind == "pull_many":
            return [r.body for r in results]
        return results[0].body.to_pybytes() if kind != "pull" else results[0].body

    def _dim(self, table: str) -> int:
        if table not in self.dims:
            raise KeyError(f"unknown table {table!r}; configured tables: {sorted(self.dims)}")
        return self.dims[table]

    def pull(self, table: str, ids, insert: bool = False) -> np.ndarray:
        """Rows of ``ids`` [n, dim] float32; zeros for IDs without a row. With ``insert``
        (trainers) the PS counts the IDs toward admission once, however often a shard's call
        is retried."""
        return self.pull_many({table: ids}, insert)[table]

    def pull_many(self, ids: dict[str, object], insert: bool = False) -> dict[str, np.ndarray]:
        """:meth:`pull` of several tables, {table: rows}, in one call per shard (the
        ``pull_many`` action), the shards in parallel: a feed's user rows cost one round trip,
        not one per table."""
        ids = {table: as_ids(wanted) for table, wanted in ids.items()}
        out = {table: np.empty((len(wanted), self._dim(table)), dtype=np.float32) for table, wanted in ids.items()}
        names = [table for table, wanted in ids.items() if len(wanted)]
        if not names:
            return out
        per_shard = {table: [slice(None)] if self.shards == 1 else split(ids[table], self.shards) for table in names}
        meta = {"tables": ",".join(names), "insert": "1" if insert else "0"}
        request = uuid.uuid4().hex  # one per shard, reused by that shard's retries
        calls, places = [], []
        for s in range(self.shards):
            mine = [(n, t, per_shard[t][s]) for n, t in enumerate(names)]
            if not any(len(ids[t][p]) for _, t, p in mine):
                continue
            body = encode({**meta, "request_id": f"{request}/{s}"},
                          id=np.concatenate([ids[t][p] for _, t, p in mine]),
                          part=np.concatenate([np.full(len(ids[t][p]), n, np.int32) for n, t, p in mine]))
            calls.append((s, "pull_many", body))
            places.append([(t, p) for _, t, p in mine])
        for place, bodies in zip(places, self._fan_out(calls)):
            for (table, p), body in zip(place, bodies):
                out[table][p] = decode(body)[1]["row"]
        return out

    def push(self, table: str, ids, grads: np.ndarray, request_id: str | None = None) -> int:
        """Apply gradients on the PS; returns rows updated (a retried push counts once).
        ``request_id`` names the push (default: random); the online trainer names it after the
        examples it carries (paramserver/ledger.py), each shard gets ``<request_id>/<shard>``."""
        ids, dim = as_ids(ids), self._dim(table)
        grads = np.asarray(grads)
        if grads.dtype != np.float32 or grads.shape != (len(ids), dim):
            raise ValueError(f"grads must be float32 of shape ({len(ids)}, {dim}) for table {table!r}, "
                             f"got {grads.dtype} {grads.shape}")
        request = request_id or uuid.uuid4().hex
        calls = [(s, "push", encode({"table": table, "request_id": f"{request}/{s}"}, id=ids[p], grad=grads[p]))
                 for s, p in enumerate(split(ids, self.shards)) if len(p)]
        return sum(self._applied(s, json.loads(r)) for (s, _, _), r in zip(calls, self._fan_out(calls)))

    def _fan_out(self, calls: list[tuple[int, str, object]]) -> list:
        """Results of ``(shard, kind, body)`` calls, in order: all but the first on the pool,
        the first on this thread (one shard: no thread hop at all)."""
        futures = [self._pool.submit(self.call_action, *call) for call in calls[1:]]
        first = [self.call_action(*calls[0])] if calls else []
        return first + [f.result() for f in futures]

    def _applied(self, shard: int, result: dict) -> int:
        """Rows applied by one shard; raises if the shard restarted since our last push to it
        (it came back from its snapshot: updates since then are gone, the trainer must roll back)."""
        seen = self._incarnations.setdefault(shard, result["incarnation"])
        if seen != result["incarnation"]:
            raise flight.FlightServerError(f"training PS shard {shard} restarted since the last push: "
                                           "updates after its snapshot were lost; roll back and replay")
        return result["applied"]

    def forget_incarnations(self) -> None:
        """Accept the shards' current processes (after a rollback to a snapshot)."""
        self._incarnations.clear()

    def stats(self) -> list[dict]:
        """Each shard's stats (rows, bytes, pulls/s, pushes/s, sync status)."""
        return [json.loads(self.call_action(s, "stats", b"")) for s in range(self.shards)]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for c in self._clients:
            c.close()
