"""First-token listwise scoring (FIRST, Reddy et al. 2024): order a window by the
log-probabilities of the first generated label instead of reading a whole permutation.

The request keeps the permutation schema (so a constrained model starts its answer with a
label) but allows only a few output tokens and asks for logprobs. The reply text may be
cut off, so it is parsed leniently; the order comes from the first token that is a label
and its top alternatives. Labels outside the alternatives keep their shown order after them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..outputs import Parsed, PermutationOutput
from ..types import TokenLogprob

__all__ = ["FIRST_TOKEN_MAX_TOKENS", "FirstLabelOutput", "first_token_order"]

#: room for the schema's opening (``{"ranking": ["``) and the first label
FIRST_TOKEN_MAX_TOKENS = 8

_QUOTED = re.compile(r'"([^"]+)"')
_TOKEN_NOISE = ' \t\n"[]{}(),:>'


class FirstLabelOutput(PermutationOutput):
    """The permutation schema, parsed leniently: whatever labels a truncated reply holds."""

    def parse(self, text: str) -> Parsed[list[int]]:
        seen: list[int] = []
        for label in _QUOTED.findall(text):
            index = self.index_of_label.get(label.strip("[]"))
            if index is not None and index not in seen:
                seen.append(index)
        return Parsed(seen)


def first_token_order(logprobs: Sequence[TokenLogprob] | None, labels: Sequence[str]) -> list[int] | None:
    """Window positions ordered by the first label token's distribution, or ``None`` when
    the reply carries no logprobs or no generated token is a label."""
    if not logprobs:
        return None
    index = {label: i for i, label in enumerate(labels)}
    for token in logprobs:
        if token.token.strip(_TOKEN_NOISE) not in index:
            continue
        best: dict[int, float] = {}
        for text, logprob in {**token.top, token.token: token.logprob}.items():
            position = index.get(text.strip(_TOKEN_NOISE))
            if position is not None and logprob > best.get(position, float("-inf")):
                best[position] = logprob
        ranked = sorted(best, key=lambda i: (-best[i], i))
        return ranked + [i for i in range(len(labels)) if i not in best]
    return None
