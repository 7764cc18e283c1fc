"""What happened when: every background request and every event of a failure run.

A `Timeline` is what the chart (chart.py) draws and what the demo and the
tests keep as JSON:

- `Sample`: one request of the simulated shoppers (shoppers.py records them):
  when it started, how long it took, whether it got the answer it wanted, and
  which replica served it (X-Served-By).
- `Event`: something done to the cluster or decided by it: kill, freeze,
  thaw, start, a replica taken out of nginx's rotation by the watchdog or put
  back, and whatever else a caller marks (power-off, address moved, failover).

Events come from several processes (each `shop-cluster` command, the
watchdog, the test itself), so they are journalled in one append-only file of
JSON lines, `EventLog`, in the workdir: a line shorter than PIPE_BUF written
with O_APPEND is never interleaved with another writer's. Times are wall-clock
seconds (time.time()), the one clock every process shares.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One request: started `at` (wall clock), took `seconds`; `ok` if its answer was the one
    wanted. `status` is None when no HTTP answer came at all."""

    at: float
    seconds: float
    ok: bool
    status: int | None
    served_by: str | None
    what: str
    shopper: str = ""  # who sent it (a simulated shopper's name)


@dataclass(frozen=True)
class Event:
    """Something that happened to the cluster `at` (wall clock), e.g. kind "freeze", target
    "shop-2". `label` is what a chart writes beside its line."""

    at: float
    kind: str
    target: str
    label: str
    detail: str = ""


class EventLog:
    """The cluster's journal of events: one JSON object per line, appended by any process."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def record(
        self, kind: str, target: str, *, label: str | None = None, detail: str = "",
        at: float | None = None,
    ) -> Event:  # fmt: skip
        """Append one event (now, unless `at` is given) and return it."""
        event = Event(
            at=time.time() if at is None else at,
            kind=kind,
            target=target,
            label=label or f"{kind} {target}",
            detail=detail,
        )
        line = (json.dumps(asdict(event), ensure_ascii=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write(2) of one line with O_APPEND: writers never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return event

    def read(self, since: float | None = None, until: float | None = None) -> list[Event]:
        """The events between `since` and `until` (wall clock), oldest first; a torn or
        foreign line is skipped, never fatal."""
        try:
            lines = self.path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                event = Event(**json.loads(line))
            except (ValueError, TypeError):
                continue
            if (since is None or event.at >= since) and (until is None or event.at <= until):
                events.append(event)
        return sorted(events, key=lambda e: e.at)

    def clear(self) -> None:
        """Start a new journal (a new cluster)."""
        self.path.unlink(missing_ok=True)


@dataclass
class Timeline:
    """Requests and events of one run, and what to call it."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    title: str = ""

    @property
    def start(self) -> float:
        """The earliest time in the run (what the chart calls 0 s)."""
        times = [s.at for s in self.samples] + [e.at for e in self.events]
        return min(times) if times else 0.0

    def slowest(self) -> Sample | None:
        return max(self.samples, key=lambda s: s.seconds, default=None)

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def summary(self) -> str:
        """One line: requests, failures, the slowest and when it started."""
        slowest = self.slowest()
        text = f"{len(self.samples)} requests, {len(self.failures())} failed"
        if slowest is not None:
            text += f", slowest {slowest.seconds:.2f} s (at {slowest.at - self.start:.1f} s)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "summary": self.summary(),
            "events": [asdict(e) for e in self.events],
            "samples": [asdict(s) for s in self.samples],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        return cls(
            samples=[Sample(**s) for s in data.get("samples", [])],
            events=[Event(**e) for e in data.get("events", [])],
            title=data.get("title", ""),
        )

    def save_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load_json(cls, path: Path) -> Timeline:
        return cls.from_dict(json.loads(path.read_text()))


def merge(samples: Iterable[Sample]) -> list[Sample]:
    """Samples of several shoppers as one list, in order of start."""
    return sorted(samples, key=lambda s: s.at)
