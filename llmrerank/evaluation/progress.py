"""Progress of an experiment: a tqdm bar on a terminal, periodic plain lines elsewhere.

Under ``make``, CI or a redirect nobody sees a bar redraw, so when stdout or stderr is not
a terminal the runner prints one line every ``interval_s`` seconds and one per finished
pipeline, to stderr: pipelines done, queries, LLM calls, cost and an ETA.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts queries, calls and cost over ``total_runs`` dataset × pipeline × repeat runs."""

    def __init__(
        self,
        total_runs: int,
        *,
        interval_s: float = 30.0,
        lines: bool | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.lines = lines if lines is not None else not (sys.stdout.isatty() and self.stream.isatty())
        self.total_runs = total_runs
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.last_line = self.started
        self.runs_done = 0
        self.calls = 0
        self.cost_usd = 0.0
        self.description = ""
        self.queries = self.queries_done = 0
        self.in_run = False
        self._bar: Any = None

    def start_run(self, description: str, queries: int) -> None:
        self.description, self.queries, self.queries_done = description, queries, 0
        self.in_run = True
        if not self.lines:
            from tqdm import tqdm

            self._bar = tqdm(total=queries, desc=description, unit="q", leave=False, disable=None)

    def query_done(self, calls: int, cost_usd: float) -> None:
        self.queries_done += 1
        self.calls += calls
        self.cost_usd += cost_usd
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(cost=f"${self.cost_usd:.4f}")
        elif time.monotonic() - self.last_line >= self.interval_s:
            self._line()

    def finish_run(self) -> None:
        self.runs_done += 1
        self.in_run = False
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.lines:
            self._line()

    def eta_s(self) -> float | None:
        current = self.queries_done / self.queries if self.in_run and self.queries else 0.0
        fraction = (self.runs_done + current) / max(1, self.total_runs)
        if fraction <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (1 - fraction) / fraction

    def _line(self) -> None:
        self.last_line = time.monotonic()
        eta = self.eta_s()
        where = self.description if self.in_run else f"finished {self.description}"
        self.stream.write(
            f"[eval] {self.runs_done}/{self.total_runs} runs done; {where}: "
            f"{self.queries_done}/{self.queries} queries; {self.calls:,} calls; ${self.cost_usd:.4f}; "
            f"elapsed {_duration(self.last_line - self.started)}; "
            f"ETA {'?' if eta is None else _duration(eta)}\n"
        )
        self.stream.flush()
