"""Whether every worker of the service is ready, for ``/readyz``.

With ``--workers N`` the CLI creates a directory and names it (and N) in the environment;
each worker writes a file named by its pid there once its pipelines are built, and removes
it when it stops. ``/readyz`` answers ``200`` only when N live workers have marked, so a
``200`` means whichever worker takes the next connection can serve it, also while a worker
the supervisor restarted is still loading. A worker killed without cleaning up leaves a
file whose pid is no longer alive: it does not count. One worker needs no directory: it
is ready when its own pipelines are.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["READY_DIR_ENV", "WORKERS_ENV", "WorkerReadiness"]

#: the directory where workers mark themselves ready (set by the CLI with --workers N)
READY_DIR_ENV = "LLMRERANK_SERVE_READY_DIR"
#: how many workers the service runs
WORKERS_ENV = "LLMRERANK_SERVE_WORKERS"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            # "pid (name) state ...": the name may hold spaces and parentheses
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerReadiness:
    def __init__(self, directory: str | None, expected: int) -> None:
        self.directory = Path(directory) if directory else None
        self.expected = max(1, expected)
        self._ready_here = False

    @classmethod
    def from_environment(cls) -> WorkerReadiness:
        workers = os.environ.get(WORKERS_ENV, "1")
        return cls(os.environ.get(READY_DIR_ENV), int(workers) if workers.isdigit() else 1)

    def mark(self) -> None:
        """This worker's pipelines are built: it can serve."""
        self._ready_here = True
        if self.directory is not None:
            (self.directory / str(os.getpid())).write_text("ready\n")
            for marker in self.directory.iterdir():  # workers that died without cleaning up
                if marker.name.isdigit() and not _alive(int(marker.name)):
                    with contextlib.suppress(OSError):
                        marker.unlink()

    def unmark(self) -> None:
        self._ready_here = False
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / str(os.getpid())).unlink()

    def ready_workers(self) -> list[int]:
        """The pids of the live workers that have marked themselves ready."""
        if self.directory is None:
            return [os.getpid()] if self._ready_here else []
        try:
            names = [p.name for p in self.directory.iterdir()]
        except OSError:
            return []
        return sorted(pid for pid in (int(n) for n in names if n.isdigit()) if _alive(pid))

    def all_ready(self) -> bool:
        return self._ready_here and len(self.ready_workers()) >= self.expected
