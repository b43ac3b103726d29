"""Listwise (RankGPT-style): the model orders a window of passages at once.

``method="sliding"`` (default): a window of ``window`` passages slides from the back of the
list to the front by ``step``, so strong passages bubble up from deep positions; each
window waits for the previous one (100 → 10 with 20/10: 9 calls, 9 rounds).
``method="partition"``: top-down partitioning (``_partition``): a first window picks a
pivot, every other window is compared with it concurrently, the gathered candidates are
ranked last, in one window of up to ``final_window`` passages (default 3 × ``window``) or
else by a sliding window. 100 → 10 with windows of 20 gathers at most 9 + 5 × 10, so it
is always 7 calls in 3 rounds; ``final_window=window`` keeps every prompt to ``window``
passages at the price of extra rounds when many candidates beat the pivot.
``window=None``: a single pass over all candidates, for long-context models; with
``context_tokens`` a prompt that would not fit is refused before any call.
``first_token=True``: each window is ordered by the first label's log-probabilities (one
short generation); a reply without them is asked again in full, counted as
``first_token_fallback``. Labels are ``1..n`` within each call; ``step`` defaults to half
the window. With ``shuffles=r`` the list is also ranked from r seeded random orders and the
results fused (rrf or Borda).
"""

from __future__ import annotations

import random
from collections.abc import Generator, Sequence

from ..errors import UserError
from ..outputs import PermutationOutput
from ._first_token import FIRST_TOKEN_MAX_TOKENS, FirstLabelOutput, first_token_order
from ._partition import partition_calls, partition_order, sliding_windows
from .base import PlanContext, Strategy, label_passages
from .plan import Answer, LLMRequest, Outcome, Plan

__all__ = ["Listwise", "sliding_windows"]

#: top-k that partitioning aims for when the caller asks for a full order
DEFAULT_PARTITION_K = 10
#: rough size of a token, to check a prompt against ``context_tokens`` without a tokenizer
CHARS_PER_TOKEN = 4

Round = Generator[Sequence[LLMRequest], Sequence[Answer], list[list[int]]]


def _fuse(orders: Sequence[Sequence[int]], method: str) -> dict[int, float]:
    scores: dict[int, float] = {}
    for order in orders:
        n = len(order)
        for rank, index in enumerate(order):
            gain = 1.0 / (60 + rank + 1) if method == "rrf" else float(n - rank)
            scores[index] = scores.get(index, 0.0) + gain
    return scores


class Listwise(Strategy):
    name = "listwise"
    default_prompt = "listwise/rankgpt@latest"

    def __init__(
        self,
        *,
        window: int | None = 20,
        step: int | None = None,
        method: str = "sliding",
        first_token: bool = False,
        shuffles: int = 0,
        aggregate: str = "rrf",
        seed: int = 0,
        context_tokens: int | None = None,
        final_window: int | None = None,
    ) -> None:
        if step is None:
            step = max(1, (window or 2) // 2)
        if window is not None and (window < 2 or not 1 <= step < window):
            raise UserError(f"listwise needs window >= 2 and 1 <= step < window, got {window}/{step}")
        if method not in ("sliding", "partition"):
            raise UserError(f"listwise method must be 'sliding' or 'partition', got {method!r}")
        if method == "partition" and (window is None or window < 3):
            raise UserError("listwise method='partition' needs a window of at least 3 (not None)")
        if method == "partition" and shuffles:
            raise UserError("listwise method='partition' does not take shuffles")
        if final_window is not None and (method != "partition" or window is None or final_window < window):
            raise UserError("final_window is for method='partition' and must be >= window")
        if method == "partition" and final_window is None and window is not None:
            final_window = 3 * window
        if aggregate not in ("rrf", "borda"):
            raise UserError("aggregate must be 'rrf' or 'borda'")
        if shuffles < 0:
            raise UserError("shuffles must be >= 0")
        if context_tokens is not None and context_tokens < 1:
            raise UserError("context_tokens must be a positive number of tokens")
        self.window, self.step, self.method, self.first_token = window, step, method, first_token
        self.shuffles, self.aggregate, self.seed = shuffles, aggregate, seed
        self.context_tokens = context_tokens
        self.final_window = final_window

    def _window(self, n: int) -> int:
        return n if self.window is None else self.window

    def estimate_calls(self, n_candidates: int, top_k: int | None = None) -> int:
        window = self._window(n_candidates)
        if self.method == "partition":
            calls = partition_calls(
                n_candidates, window, self.step, top_k or DEFAULT_PARTITION_K, self.final_window or window
            )
        elif n_candidates < 2:
            calls = 0
        else:
            calls = len(sliding_windows(n_candidates, window, self.step)) * (self.shuffles + 1)
        # a first-token reply without logprobs is asked again in full
        return calls * 2 if self.first_token else calls

    def passages_per_request(self, n_candidates: int) -> int:
        """The most passages one request shows (partition's last window may be the widest)."""
        widest = self._window(n_candidates)
        if self.method == "partition":
            widest = max(widest, self.final_window or 0)
        return min(n_candidates, widest)

    def max_output_tokens(self, passages: int) -> int:
        return 8 * passages + 32  # a first-token request may fall back to the full permutation

    def _request(
        self, context: PlanContext, texts: Sequence[str], indices: Sequence[int], *, full: bool
    ) -> LLMRequest:
        labels = [str(i + 1) for i in range(len(indices))]
        output = PermutationOutput(labels) if full else FirstLabelOutput(labels)
        rendered = context.prompt.render(
            **context.render_variables(
                passages=label_passages(labels, [texts[i] for i in indices]),
                output_instruction=output.instruction,
            )
        )
        max_tokens = self.max_output_tokens(len(indices)) if full else FIRST_TOKEN_MAX_TOKENS
        if self.context_tokens is not None:
            chars = sum(len(message["content"]) for message in rendered.messages())
            needed = chars // CHARS_PER_TOKEN + max_tokens
            if needed > self.context_tokens:
                raise UserError(
                    f"a listwise prompt over {len(indices)} passages needs about {needed:,} tokens "
                    f"(prompt + answer), more than the model's context of {self.context_tokens:,}; "
                    "use a window (e.g. window=20), fewer candidates or a shorter max_words"
                )
        return LLMRequest(context.prompt, rendered, output, logprobs=not full, max_tokens=max_tokens)

    def _rank_round(
        self, context: PlanContext, texts: Sequence[str], windows: list[list[int]], fallbacks: list[int]
    ) -> Round:
        """Rank ``windows`` concurrently (one round; a first-token fallback adds one)."""
        full = not self.first_token
        answers = yield [self._request(context, texts, w, full=full) for w in windows]
        orders: list[list[int] | None] = []
        for window, answer in zip(windows, answers, strict=True):
            positions = answer.value if full else first_token_order(answer.logprobs, answer_labels(window))
            orders.append(None if positions is None else [window[i] for i in positions])
        missing = [i for i, order in enumerate(orders) if order is None]
        if missing:
            fallbacks.append(len(missing))
            again = yield [self._request(context, texts, windows[i], full=True) for i in missing]
            for i, answer in zip(missing, again, strict=True):
                orders[i] = [windows[i][p] for p in answer.value]
        return [order for order in orders if order is not None]

    def _slide(
        self, context: PlanContext, texts: Sequence[str], passes: list[list[int]], fallbacks: list[int]
    ) -> Generator[Sequence[LLMRequest], Sequence[Answer], None]:
        """Slide the window over every pass in place, the passes side by side."""
        n = len(passes[0])
        for start, end in sliding_windows(n, self._window(n), self.step):
            ranked = yield from self._rank_round(context, texts, [p[start:end] for p in passes], fallbacks)
            for order, window in zip(passes, ranked, strict=True):
                order[start:end] = window

    def plan(self, context: PlanContext) -> Plan:
        texts, truncated = context.passages()
        n = len(texts)
        if n < 2:
            return Outcome(order=list(range(n)), truncated=truncated)
        fallbacks: list[int] = []
        if self.method == "partition" and n > self._window(n):

            def sliding(items: list[int]) -> Generator[Sequence[LLMRequest], Sequence[Answer], list[int]]:
                yield from self._slide(context, texts, [items], fallbacks)
                return items

            order = yield from partition_order(
                n,
                self._window(n),
                context.top_k or DEFAULT_PARTITION_K,
                self.final_window or self._window(n),
                lambda windows: self._rank_round(context, texts, windows, fallbacks),
                sliding,
            )
            return Outcome(order=order, repairs=_fallback_repairs(fallbacks), truncated=truncated)
        passes = [list(range(n))]
        rng = random.Random(self.seed)
        for _ in range(self.shuffles):
            shuffled = list(range(n))
            rng.shuffle(shuffled)
            passes.append(shuffled)
        yield from self._slide(context, texts, passes, fallbacks)
        repairs = _fallback_repairs(fallbacks)
        if len(passes) == 1:
            return Outcome(order=passes[0], repairs=repairs, truncated=truncated)
        fused = _fuse(passes, self.aggregate)
        order = sorted(range(n), key=lambda i: (-fused[i], i))
        return Outcome(order=order, scores=fused, repairs=repairs, truncated=truncated)


def answer_labels(window: Sequence[int]) -> list[str]:
    return [str(i + 1) for i in range(len(window))]


def _fallback_repairs(fallbacks: list[int]) -> dict[str, int]:
    total = sum(fallbacks)
    return {"first_token_fallback": total} if total else {}
