"""One noise model behind every answer of the simulated judge.

Each query–passage pair gets a fixed *perceived* relevance: its graded label plus
``sigma`` · N(0, 1), drawn from a generator seeded by the judge's seed and the pair itself,
so the judge "misreads" a passage the same way whichever strategy asks and however often.
Every output type is derived from those perceived scores:

* a grade is the perceived score rounded and clipped onto the scale;
* a permutation sorts by perceived score;
* a preference or a best-of-set choice takes the highest perceived score;
* first-token log-probabilities are a softmax over the perceived scores, in the order of
  the permutation the judge would generate.

``position_bias`` is the probability of preferring what is shown first in any single
decision: a preference answers "A", a best-of-set choice takes the first passage, and
inside a permutation each comparison between two passages goes to the one shown earlier,
each with that probability. The per-decision coin flips are seeded by the request.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LatentJudgement"]


@dataclass(frozen=True, slots=True)
class LatentJudgement:
    sigma: float = 0.0
    position_bias: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if not 0.0 <= self.position_bias <= 1.0:
            raise ValueError(f"position_bias must be in [0, 1], got {self.position_bias}")

    def perceived(self, query_key: str, passage_key: str, relevance: int) -> float:
        """The judge's fixed reading of one pair: ``relevance + sigma · N(0, 1)``."""
        if self.sigma == 0:
            return float(relevance)
        material = f"{self.seed}\x00{query_key}\x00{passage_key}".encode()
        draw = random.Random(hashlib.sha256(material).digest()).gauss(0.0, 1.0)
        return relevance + self.sigma * draw

    def _first_wins(self, rng: random.Random) -> bool:
        return self.position_bias > 0 and rng.random() < self.position_bias

    def grade(self, score: float, max_label: int, scale: Sequence[int]) -> int:
        clipped = min(max(score, 0.0), float(max_label))
        position = round(clipped / max_label * (len(scale) - 1)) if max_label else 0
        return scale[position]

    def prefer_first(self, first: float, second: float, rng: random.Random) -> bool:
        return self._first_wins(rng) or first >= second

    def best(self, scores: Sequence[float], rng: random.Random) -> int:
        if self._first_wins(rng):
            return 0
        return max(range(len(scores)), key=lambda i: (scores[i], -i))

    def order(self, scores: Sequence[float], rng: random.Random) -> list[int]:
        """Shown positions, best first; each comparison may go to the earlier-shown passage."""

        def compare(a: int, b: int) -> int:
            earlier, later = min(a, b), max(a, b)
            if self._first_wins(rng):
                return -1 if a == earlier else 1
            if scores[earlier] >= scores[later]:
                return -1 if a == earlier else 1
            return 1 if a == earlier else -1

        return sorted(range(len(scores)), key=functools.cmp_to_key(compare))

    @staticmethod
    def first_token_logprobs(scores: Sequence[float], order: Sequence[int]) -> list[float]:
        """Log-probabilities of each position in ``order`` being generated first: the
        softmax of the perceived scores, assigned best first so it agrees with ``order``."""
        ranked = sorted(scores, reverse=True)
        top = ranked[0] if ranked else 0.0
        norm = top + math.log(sum(math.exp(s - top) for s in ranked))
        return [ranked[rank] - norm for rank in range(len(order))]
