"""Negative sampling with a rate per task, decided by a stable hash so a replay keeps the same.

A negative (an item served and not acted on) says "no" to every task, but the tasks need
different amounts of it: clicks are common, shares rare. Each task ``t`` has a rate ``r_t``.
One uniform draw ``u`` per example (a hash of its key) decides all tasks at once, nested:

- the example is kept for task ``t`` when ``u < r_t``, and then weighs ``1 / r_t`` in that
  task's loss: in expectation it stands for exactly the negatives it replaced;
- it is kept at all when ``u < max_t r_t`` (``sample_rate`` on the example), and for the
  tasks with ``u >= r_t`` it carries rate 0 in ``sample_rates``: it says nothing about them.

So one stored negative serves every task that wants it, and the stream shrinks to the
largest rate, not the sum. The same function samples the joiner's negatives online and the
batch pipeline's down-sampling, so both produce the same set for the same keys.

Example::

    from streaming.sampling import sample_negative
    sample_negative("req-1|42", {"click": 0.1, "like": 0.5})
    # None (dropped), or e.g. {"click": 0.0, "like": 0.5}: kept for like only
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def uniform(key: str) -> float:
    """A stable draw in [0, 1) from ``key`` (BLAKE2b, 64 bits); the same key always draws the same."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def check_rates(rates: Mapping[str, float]) -> dict[str, float]:
    """``rates`` as a dict, each in (0, 1]. Raises ValueError naming the bad task."""
    if not rates:
        raise ValueError("negative rates: no task given; expected task=rate for each task")
    for task, rate in rates.items():
        if not 0 < rate <= 1:
            raise ValueError(f"negative rate of {task!r} is {rate}: expected 0 < rate <= 1")
    return dict(rates)


def sample_negative(key: str, rates: Mapping[str, float]) -> dict[str, float] | None:
    """Per-task rates of the negative with ``key`` if it is kept (0.0 for a task it is not kept
    for), or None when it is dropped for every task."""
    u = uniform(key)
    if u >= max(rates.values()):
        return None
    return {task: (rate if u < rate else 0.0) for task, rate in rates.items()}


def example_rates(rates: dict[str, float]) -> tuple[float, dict[str, float] | None]:
    """``(sample_rate, sample_rates)`` to write on a kept negative: the rate of being kept at all,
    and the per-task rates, left out (None) when every task has the same one."""
    sample_rate = max(rates.values())
    return sample_rate, (None if len(set(rates.values())) == 1 else rates)


def parse_rates(text: str, tasks: tuple[str, ...], default: float) -> dict[str, float]:
    """``"like=0.5,share=1"`` -> a rate for each of ``tasks``, ``default`` for those not named.

    Raises:
      ValueError: an unknown task, a malformed pair, or a rate outside (0, 1].
    """
    rates = dict.fromkeys(tasks, default)
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, sep, value = part.partition("=")
        if not sep or task not in rates:
            raise ValueError(f"negative rates: {part!r}: expected task=rate with task one of {', '.join(tasks)}")
        try:
            rates[task] = float(value)
        except ValueError:
            raise ValueError(f"negative rates: {part!r}: the rate is not a number") from None
    return check_rates(rates)
