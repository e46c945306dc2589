"""The user simulator: the traffic source of the closed loop.

A history (any source the data contract reads, datasets/) plays a population of users against the running model server over
HTTP: the held-out (latest) ratings become sessions that ask for feeds, and what each user
does with the shown items, decided from their ratings and genre tastes, is posted back as
``Action`` events, some of them late. Run it with ``flywheel simulate``.

- ``population.py``: the users, their tastes (and drift) and their reactions; pure functions;
- ``replay.py``: sessions in event-time order, sped up and rate-capped, in real time;
- ``client.py``: ``GET /feed`` and ``POST /events`` with retries;
- ``late.py``: actions held back and posted later with their original event time;
- ``metrics.py``: Prometheus counters of all of it;
- ``freshness.py``: probes of the loop's freshness (an action -> the serving PS's row).

Nothing is imported here, so a light module (``late``, ``metrics``) does not pull in the
population's history loader (pandas).
"""
