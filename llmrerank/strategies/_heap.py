"""Top-k by heap sort where every comparison is a question to the model.

``pick`` is a sub-plan: given candidate indices (a heap node and its children) it yields
requests and returns the position of the best one. The result is the top ``k`` in order,
then the rest in their input order.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

__all__ = ["Pick", "heap_top_k"]

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
