"""Top-down partitioning for listwise top-k (Parry, MacAvaney and Ganguly, SIGIR 2024).

1. Rank the first ``window`` candidates; the k-th of them becomes the pivot.
2. Every other candidate goes into a window of at most ``window - 1`` plus the pivot; all these
   windows are ranked in one round, concurrently. Whatever a window puts above the pivot
   is a candidate for the top-k (at most k from a window: k others beat the rest).
3. The gathered candidates are ranked: one window if they fit in ``final_window``
   (default ``window``), else a sliding window (more rounds).

For 100 → 10 with windows of 20 that is 1 + 5 calls and, when at most ``window``
candidates are gathered, 1 more: three sequential rounds. Everything below the pivot
keeps the order its window gave it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence

from .plan import Answer, LLMRequest

__all__ = ["partition_calls", "partition_order", "sliding_windows"]

RankRound = Callable[[list[list[int]]], Generator[Sequence[LLMRequest], Sequence[Answer], list[list[int]]]]
SlidingOrder = Callable[[list[int]], Generator[Sequence[LLMRequest], Sequence[Answer], list[int]]]


def sliding_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each call, back to front: 100/20/10 gives 9 windows."""
    if n <= 0:
        return []
    spans = []
    end = n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


def _pivot_rank(window: int, k: int) -> int:
    return max(1, min(k, window))


def partition_calls(n: int, window: int, step: int, k: int, final_window: int) -> int:
    """The most calls ``partition_order`` can make (before first-token fallbacks)."""
    if n < 2:
        return 0
    if n <= window:
        return 1
    pivot_rank = _pivot_rank(window, k)
    others = math.ceil((n - window) / (window - 1))
    gathered = min(n - 1, (pivot_rank - 1) + others * min(pivot_rank, window - 1))
    if gathered <= 1:
        final = 0
    elif gathered <= final_window:
        final = 1
    else:
        final = len(sliding_windows(gathered, window, step))
    return 1 + others + final


def partition_order(
    n: int, window: int, k: int, final_window: int, rank_round: RankRound, sliding: SlidingOrder
) -> Generator[Sequence[LLMRequest], Sequence[Answer], list[int]]:
    """A full order of ``range(n)`` (``n > window``), best first."""
    (first,) = yield from rank_round([list(range(window))])
    pivot_rank = _pivot_rank(window, k)
    pivot = first[pivot_rank - 1]
    gathered = first[: pivot_rank - 1]
    below = first[pivot_rank:]
    rest = list(range(window, n))
    count = math.ceil(len(rest) / (window - 1))  # as few windows as fit, of even sizes
    windows = [[pivot, *rest[i * len(rest) // count : (i + 1) * len(rest) // count]] for i in range(count)]
    for order in (yield from rank_round(windows)):
        at = order.index(pivot)
        above = order[:at]
        gathered += above[:pivot_rank]
        below += above[pivot_rank:] + order[at + 1 :]
    if len(gathered) > final_window:
        gathered = yield from sliding(gathered)
    elif len(gathered) > 1:
        (gathered,) = yield from rank_round([gathered])
    return [*gathered, pivot, *below]
