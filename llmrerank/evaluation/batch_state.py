"""Batch-mode settings, and the state file that lets a killed batch run resume.

The state file (beside the run's checkpoint) lists the provider batches submitted and not
yet consumed; it is written right after each submit, before waiting, so a run killed while
a batch is in flight picks that batch up on the next run instead of paying for it again.

It also books every reply the run paid for to the query that asked, until that query is in
the checkpoint: a resumed run finds those answers in the cache, and ``PaidCalls.settle``
prices them as this run's calls, not as free cache hits (a cache filled by another run
stays free).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .._concurrency import CancelToken, Limiter
from ..backends.batch_base import BatchClient, BatchStatus
from ..errors import BackendError, UserError
from ..retry import Attempting, RetryPolicy
from .records import PaidCalls

__all__ = ["BatchOptions", "BatchState", "wait_for_batch"]

logger = logging.getLogger("llmrerank")

T = TypeVar("T")


@dataclass(frozen=True)
class BatchOptions:
    """``poll_s``: first wait between status checks, doubling up to ``poll_max_s``;
    ``max_attempts``: how often one request is submitted when it comes back expired or
    errored before its query is reported as failed; ``timeout_s``: give up waiting on a
    batch (None: the provider's own window, 24 h)."""

    poll_s: float = 15.0
    poll_max_s: float = 300.0
    max_attempts: int = 3
    timeout_s: float | None = None


class BatchState:
    """Submitted, unconsumed batch ids of one run (dataset × pipeline × repeat), and the
    replies it paid for (``paid``) per query not yet in the checkpoint. ``finished``: the
    queries already there (their records carry their calls; what was booked for them is
    dropped)."""

    def __init__(self, path: Path, finished: Collection[str] = ()) -> None:
        self.path = path
        self.pending: list[str] = []
        self.rounds = 0
        self.paid = PaidCalls()
        if path.exists():
            try:
                raw = json.loads(path.read_text("utf-8"))
                self.pending, self.rounds = list(raw["pending"]), int(raw["rounds"])
                self.paid = PaidCalls(raw.get("paid", []), finished)
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"batch state {path} is unreadable ({exc}); delete it to start over") from exc

    def _save(self) -> None:
        state = {"pending": self.pending, "rounds": self.rounds, "paid": self.paid.entries()}
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(state), "utf-8")
        os.replace(scratch, self.path)

    def submitted(self, batch_id: str) -> None:
        self.pending.append(batch_id)
        self.rounds += 1
        self._save()

    def consumed(self, batch_ids: list[str]) -> None:
        """Saves the batches consumed and the replies booked since the last save, together."""
        self.pending = [b for b in self.pending if b not in batch_ids]
        self._save()

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def with_retries(retry: RetryPolicy, call: Callable[[], T], provider: str = "batch") -> T:
    """``call()`` under the one retry policy (transient errors retried, bounded)."""
    state = Attempting(limiter=Limiter(1), token=CancelToken(), attempts=[0], provider=provider)
    return retry.call(call, state)


def wait_for_batch(
    client: BatchClient,
    batch_id: str,
    options: BatchOptions,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> BatchStatus:
    """Poll with exponential backoff until the batch has ended."""
    started = time.monotonic()
    delay = options.poll_s
    while True:
        status = with_retries(retry, lambda: client.status(batch_id))
        if status.done:
            logger.info("batch %s %s %s", batch_id, status.state, dict(status.counts))
            return status
        if options.timeout_s is not None and time.monotonic() - started > options.timeout_s:
            raise BackendError(
                f"batch {batch_id} still {status.state} after {options.timeout_s}s; "
                "re-run to keep waiting for it"
            )
        sleep(delay)
        delay = min(options.poll_max_s, delay * 2)
