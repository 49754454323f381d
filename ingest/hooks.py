"""Test hooks, read from the environment, that stop or pause a run at a named step, so a test can act at that step
without guessing with a timer from outside:

- `TOKENDIRECT_CRASH_AT=STAGE:N` kills this process with SIGKILL the N-th time it reaches STAGE;
  `STAGE:N+SECONDS` kills it SECONDS after that (a moment chosen by time, counted from a known step).
- `TOKENDIRECT_PAUSE_AT=STAGE:N` pauses the N-th time it reaches STAGE: the process writes `paused at STAGE` on
  stderr and goes on once a line arrives on its stdin (calling `idle` while it waits, as the paused code would).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading

CRASH_ENV = "TOKENDIRECT_CRASH_AT"
PAUSE_ENV = "TOKENDIRECT_PAUSE_AT"
_counts: dict[tuple[str, str], int] = {}


def _reached(env: str, stage: str) -> str | None:
    """The spec's tail after `N` when this is the N-th time `stage` is reached, else None."""
    spec = os.environ.get(env)
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    if name != stage:
        return None
    count, _, tail = rest.partition("+")
    key = (env, stage)
    _counts[key] = _counts.get(key, 0) + 1
    return tail if _counts[key] == int(count or 1) else None


def crash_point(stage: str) -> None:
    delay = _reached(CRASH_ENV, stage)
    if delay is None:
        return
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if delay:
        threading.Timer(float(delay), kill).start()
    else:
        kill()


def pause_point(stage: str, idle=None) -> None:
    if _reached(PAUSE_ENV, stage) is None:
        return
    print(f"paused at {stage}", file=sys.stderr, flush=True)
    while not select.select([sys.stdin], [], [], 0.1)[0]:
        if idle is not None:
            idle()
    sys.stdin.readline()
