"""The short chaos run (`make chaos` is the long one): on the running loop, each component is
SIGKILLed once under traffic (the run's own and the simulator's); each comes back, every acknowledged action is on `actions` exactly
once and every acknowledged click is joined, and the serving PS converges to the training PS.

Runs last (conftest orders `chaos` tests after the others): it restarts the whole stack's parts.
"""

from __future__ import annotations

import pytest

from flywheel import chaos
from datasets.movielens_sample import write_movielens
from tests.integration.loop_stack import running_loop

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.timeout(2400)
def test_every_component_killed_once_loses_and_doubles_nothing(stack, tmp_path_factory):
    folder = write_movielens(tmp_path_factory.mktemp("ml"), users=120, items=60, ratings_per_user=25, days=4)
    lines: list[str] = []
    with running_loop(stack, folder) as loop:
        cfg = loop["cfg"]  # the simulator replays the folder too, at 2 sessions/s: its retries are part of the run
        cfg = cfg.model_copy(update={"simulator": cfg.simulator.model_copy(update={"rate": 2.0})})
        report = chaos.run(cfg, list(chaos.FAULTS), gap_s=(3, 6), rate=4, seed=1, timeout_s=240,
                           settle_s=240, data=str(folder), echo=lambda m: (lines.append(m), print(m, flush=True)))
    assert [f["program"] for f in report["faults"]] == list(chaos.FAULTS)
    assert all(f["healthy_s"] is not None and f["fresh_s"] is not None for f in report["faults"]), "\n".join(lines)
    assert report["actions_acked"] > 20, "too little traffic got through to prove anything"
    assert report["simulator"]["actions_acked"] > 20, "the simulator's traffic did not get through"
    assert all(inv["ok"] for inv in report["invariants"]) and report["converged"]["ok"], "\n".join(lines)
