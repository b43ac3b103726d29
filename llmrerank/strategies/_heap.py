"""Top-k by heap sort where every comparison is a question to the model.

``pick`` is a sub-plan: given candidate indices (a heap node and its children) it yields
requests and returns the position of the best one. The result is the top ``k`` in order,
then the rest in their input order.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

__all__ = ["Pick", "heap_top_k", "heap_top_k_bound"]

Pick = Callable[[Sequence[int]], Generator[Any, Any, int]]


def heap_top_k(n: int, k: int, arity: int, pick: Pick) -> Generator[Any, Any, list[int]]:
    heap = list(range(n))

    def sift_down(node: int, size: int) -> Generator[Any, Any, None]:
        while True:
            first_child = arity * node + 1
            if first_child >= size:
                return
            group = [node, *range(first_child, min(first_child + arity, size))]
            best = yield from pick([heap[i] for i in group])
            if best == 0:
                return
            chosen = group[best]
            heap[node], heap[chosen] = heap[chosen], heap[node]
            node = chosen

    for node in range((n - 2) // arity, -1, -1):
        yield from sift_down(node, n)
    top: list[int] = []
    size = n
    while size > 0 and len(top) < k:
        top.append(heap[0])
        size -= 1
        heap[0] = heap[size]
        if size > 0 and len(top) < k:
            yield from sift_down(0, size)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def _sift_bound(node: int, size: int, arity: int, cost: Callable[[int], int]) -> int:
    """The most ``cost`` one ``sift_down(node, size)`` can spend; ``cost(children)`` is the
    price of one pick over a node and that many children, non-decreasing in ``children``.

    Proof sketch: a sift visits one node per level, and at each level the leftmost
    descendant of ``node`` (reached by always taking the first child) has the smallest index.
    Children of consecutive nodes are consecutive in the array, so if any node on a level has
    a child below ``size`` the leftmost one does too, with at least as many children. Hence
    the leftmost path is at least as long as any path the sift can take and each of its
    steps costs at least as much as that step on any other path: its total bounds them all.
    """
    total = 0
    while True:
        first_child = arity * node + 1
        if first_child >= size:
            return total
        total += cost(min(arity, size - first_child))
        node = first_child


def heap_top_k_bound(n: int, k: int, arity: int, cost: Callable[[int], int]) -> int:
    """An upper bound on what ``heap_top_k(n, k, arity, pick)`` spends when one pick over a
    node and ``c`` children costs ``cost(c)``: each sift of the build and of the first
    ``k - 1`` pops, bounded by ``_sift_bound``, summed (the answers decide how far a sift
    goes; the bound holds whatever they are)."""
    if n < 2 or k < 1:
        return 0
    k = min(n, k)
    build = sum(_sift_bound(node, n, arity, cost) for node in range((n - 2) // arity, -1, -1))
    pops = sum(_sift_bound(0, size, arity, cost) for size in range(n - 1, n - k, -1))
    return build + pops
