"""Where the policy node's time goes, per published plan, for the end-to-end latency benchmark.

A `Stopwatch` rides along with each cloud: the points callback laps `decode`, `transform` and
`validate`, the planning thread `wait` (kept → picked up) and `publish`; `condition`, `head`
and `check` are the planner's own split of its plan() call (encoder, Pose-DiT sampling, and the
rest: the planner's input check, cutting, refinement, the plan validator). A few perf_counter calls
per cloud: it always runs.

With the node's `timings_path` set, `StageTimings` keeps the newest records in memory and writes
them as one JSON document, atomically (a reader never sees half a file):

    {"stages": ["decode", ...], "plans": [{"stamp_ns": ..., "callback_wall_ns": ..., "decode_ms": ..., ...}]}

`callback_wall_ns` is time.time_ns() when the points callback began: a client that stamps its
clouds with wall time gets the transport delay as callback_wall_ns − stamp_ns.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path

STAGES = ("decode", "transform", "validate", "wait", "condition", "head", "check", "publish")


class Stopwatch:
    """Milliseconds between laps; started when the cloud's callback begins."""

    def __init__(self):
        self.wall_ns = time.time_ns()
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = (now - self._last) * 1e3
        self._last = now


class StageTimings:
    """The newest `keep` plans' stage times, written as JSON to `path` on request."""

    def __init__(self, path: str | Path, keep: int = 100_000):
        self.path = Path(path)
        self._plans: deque[dict] = deque(maxlen=keep)  # bounded: a node may run for days
        self._added = self._written = 0
        self._lock = threading.Lock()  # add (inference thread) vs the copy in write (timer, close)
        self._writing = threading.Lock()  # the timer and close() may both write
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, stamp_ns: int, watch: Stopwatch, encoder_ms: float, head_ms: float, total_ms: float) -> None:
        ms = dict(watch.ms, condition=encoder_ms, head=head_ms, check=total_ms - encoder_ms - head_ms)
        record = {"stamp_ns": stamp_ns, "callback_wall_ns": watch.wall_ns, **{f"{s}_ms": round(ms[s], 4) for s in STAGES}}
        with self._lock:
            self._plans.append(record)
            self._added += 1

    def write(self) -> None:
        """Write the file when there is something new (or no file yet): tmp + os.replace."""
        with self._writing:
            with self._lock:
                if self._added == self._written and self.path.exists():
                    return
                plans, self._written = list(self._plans), self._added
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"stages": list(STAGES), "plans": plans}))
            os.replace(tmp, self.path)
