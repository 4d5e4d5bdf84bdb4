"""The measurement gate: how a worker and the parent agree on measurement turns, both sides in one place.

A gated worker builds its engine, says it is ready, and measures only when the parent grants it a turn; the
parent pauses every other worker meanwhile (`planner.measure.runner.Runner`), so one candidate is timed at a
time per device.  A trial takes one turn ("go"); a re-measurement takes one turn per round ("go-r"), and answers
each with that round's statistics ("round-r.json", written atomically).  The signals are files in the job's
gate folder: they survive the pause (SIGSTOP) of either side and need no open channel across a fork.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

POLL_S = 0.005  # how often a waiting side looks: well under the noise of any measurement


class Gate:
    def __init__(self, folder: str | Path):
        self.dir = Path(folder)

    # ---- parent side
    def reset(self) -> "Gate":
        """A fresh gate: no signal of an earlier job in this folder."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return self

    @property
    def ready(self) -> bool:
        """The worker built its engine and waits for its (first) turn."""
        return (self.dir / "ready").exists()

    def go(self, round_: int | None = None) -> None:
        """Grant the worker its turn (a trial's one turn, or round ``round_`` of a re-measurement)."""
        (self.dir / ("go" if round_ is None else f"go-{round_}")).touch()

    def round_result(self, round_: int) -> dict[str, Any] | None:
        """Round ``round_``'s statistics once the worker wrote them, else None."""
        p = self.dir / f"round-{round_}.json"
        return json.loads(p.read_text()) if p.exists() else None

    # ---- worker side
    def say_ready(self) -> None:
        (self.dir / "ready").touch()

    def wait(self, round_: int | None = None) -> None:
        """Block until the parent grants the turn (the parent kills a worker it no longer needs)."""
        flag = self.dir / ("go" if round_ is None else f"go-{round_}")
        while not flag.exists():
            time.sleep(POLL_S)

    def write_round(self, round_: int, stats: dict[str, Any]) -> None:
        tmp = self.dir / f".round-{round_}.tmp"
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, self.dir / f"round-{round_}.json")


def die_with_parent(parent: int | None = None) -> bool:
    """Linux: have this process SIGKILLed when the thread that forked it dies (PR_SET_PDEATHSIG), so no orphan
    keeps running; exit at once when ``parent`` (its pid) died before that took effect.  False where prctl is
    unavailable (the process then lives on if its parent dies)."""
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and parent and os.getppid() != parent:
        os._exit(1)
    return ok
