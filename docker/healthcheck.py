"""Container health probe for compose healthchecks (standard library only: any image's python).

Usage::

    healthcheck.py tcp://HOST:PORT
    healthcheck.py http://HOST:PORT/PATH [KEY=VALUE | KEY>=NUMBER ...]

Exit 0 when the port accepts a connection, or the URL answers 2xx and every condition on its
JSON body holds. KEY is a dotted path, list items by index (``beans.0.FSState=Operational``).
Otherwise exit 1 with the reason on stdout, which ``docker inspect`` shows.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import urllib.request
from urllib.parse import urlsplit

TIMEOUT_S = 4.0
CONDITION = re.compile(r"^(?P<key>[\w.\-]+)(?P<op>>=|=)(?P<want>.*)$")


def lookup(doc: object, key: str) -> object:
    """The value at a dotted path of a decoded JSON document (KeyError/IndexError if absent)."""
    for part in key.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]  # type: ignore[index]
    return doc


def check_condition(doc: object, condition: str) -> str | None:
    """None when ``condition`` holds on ``doc``, else why it does not."""
    match = CONDITION.match(condition)
    if not match:
        return f"bad condition {condition!r}: use KEY=VALUE or KEY>=NUMBER"
    key, op, want = match["key"], match["op"], match["want"]
    try:
        got = lookup(doc, key)
    except (KeyError, IndexError, ValueError, TypeError):
        return f"{key} is absent"
    if op == ">=":
        ok = isinstance(got, (int, float)) and got >= float(want)
    else:
        ok = str(got).lower() == want.lower()
    return None if ok else f"{key} is {got!r}, want {op}{want}"


def probe(target: str, conditions: list[str]) -> str | None:
    """Probe one target.

    Args:
      target: ``tcp://HOST:PORT`` or an http(s) URL.
      conditions: ``KEY=VALUE`` / ``KEY>=NUMBER`` checks on the URL's JSON answer.

    Returns:
      None when healthy, else the reason.
    """
    url = urlsplit(target)
    if url.scheme == "tcp":
        try:
            with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT_S):
                return None
        except OSError as exc:
            return f"{target}: {exc}"
    try:
        with urllib.request.urlopen(target, timeout=TIMEOUT_S) as resp:
            body = resp.read()
    except OSError as exc:  # URLError and HTTPError (non-2xx) are OSErrors
        return f"{target}: {exc}"
    if not conditions:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return f"{target}: answer is not JSON"
    failures = [why for c in conditions if (why := check_condition(doc, c))]
    return "; ".join(failures) or None


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    why = probe(argv[0], argv[1:])
    print(why or "healthy")
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
