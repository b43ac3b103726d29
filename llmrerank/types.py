"""Plain data passed between stages: candidates in, a ``Ranking`` out.

Long because it is also the one place user input is checked (ids, texts, the query), and
value types may import nothing but the error tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload

from .errors import CandidateError, UserError

__all__ = [
    "CallRecord",
    "Candidate",
    "CandidateLike",
    "RankedCandidate",
    "Ranking",
    "StageReport",
    "TokenLogprob",
    "Usage",
    "as_candidates",
    "as_count",
    "as_query",
    "as_request",
    "as_seconds",
    "as_top_k",
    "check_text",
]


def check_text(text: str, what: str) -> None:
    """Raise ``CandidateError`` naming ``what`` unless ``text`` is encodable as UTF-8.

    A lone surrogate (``"\\ud800"``, e.g. from ``json.loads`` of a bad escape) cannot be
    sent to a model or hashed into a cache key; it is the caller's input error, never
    silently replaced, so what is ranked is exactly what was given.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end].encode("utf-8", "backslashreplace").decode("ascii")
        raise CandidateError(
            f"{what} is not valid Unicode: {bad} at character {exc.start} (a lone surrogate)"
        ) from None


def as_query(query: object) -> str:
    """The query, checked: a non-empty string of valid Unicode (``CandidateError`` otherwise)."""
    if not isinstance(query, str) or not query.strip():
        raise CandidateError(f"query must be a non-empty string, got {query!r:.40}")
    check_text(query, "query")
    return query


@dataclass(frozen=True, slots=True)
class Candidate:
    """One retrieved passage. ``score`` is the first-stage score (BM25, cosine), if any."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise CandidateError(f"candidate id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str):
            raise CandidateError(
                f"candidate {self.id!r}: text must be a string, got {type(self.text).__name__}"
            )
        if not self.text.strip():
            raise CandidateError(f"candidate {self.id!r}: text is empty")
        check_text(self.id, "candidate id")
        check_text(self.text, f"candidate {self.id!r}: text")

    @classmethod
    def from_text(cls, text: str) -> Candidate:
        """A candidate whose id is a stable hash of its text."""
        if not isinstance(text, str):
            raise CandidateError(f"candidate text must be a string, got {type(text).__name__}")
        check_text(text, "candidate text")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        return cls(id=f"t{digest}", text=text)


CandidateLike = Candidate | str | Mapping[str, Any]


def _as_id(value: object, position: int) -> str:
    """Ids are strings or numbers; numbers are stringified (``7`` and ``"7"`` are the same id)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CandidateError(
            f"candidate #{position}: id must be a string or a number, "
            f"got {type(value).__name__} {value!r:.40}"
        )
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_candidate(item: object, position: int) -> Candidate:
    if isinstance(item, Candidate):
        return item
    if isinstance(item, str):
        return Candidate.from_text(item)
    if isinstance(item, Mapping):
        known = {"id", "text", "metadata", "score"}
        extra = set(item) - known
        if "id" not in item or "text" not in item:
            raise CandidateError(f"candidate #{position} needs 'id' and 'text' keys, got {sorted(item)}")
        metadata = dict(item.get("metadata") or {})
        metadata.update({k: item[k] for k in extra})
        score = item.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise CandidateError(f"candidate #{position}: score must be a number, got {score!r:.40}")
        return Candidate(
            id=_as_id(item["id"], position),
            text=item["text"],
            metadata=metadata,
            score=None if score is None else float(score),
        )
    raise CandidateError(
        f"candidate #{position} must be a Candidate, a string or a mapping, got {type(item).__name__}"
    )


def as_candidates(items: Sequence[CandidateLike]) -> list[Candidate]:
    """Normalise user input into candidates; duplicates and empties raise ``CandidateError``.

    Only an ordered sequence (a list, a tuple) is taken: the input order is the first-stage
    order every stage falls back to, which a set, a mapping or a one-shot iterator lacks.
    """
    if isinstance(items, (str, bytes)):
        raise CandidateError("candidates must be a sequence of passages, not a single string")
    if isinstance(items, Mapping):
        raise CandidateError(
            f"candidates must be a list of passages, not a {type(items).__name__}"
            " (a mapping would rank its keys)"
        )
    if not isinstance(items, Sequence):
        raise CandidateError(
            f"candidates must be a list of passages, not a {type(items).__name__}"
            " (it has no order for the stages to start from)"
        )
    candidates = [_to_candidate(item, i) for i, item in enumerate(items)]
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.id in seen:
            raise CandidateError(f"duplicate candidate id {candidate.id!r}")
        seen.add(candidate.id)
    return candidates


def as_count(value: object, what: str, *, minimum: int = 1) -> int:
    """A count the caller set (``max_concurrency``, ``narrow_to``): an integer of at least
    ``minimum``; ``UserError`` naming ``what`` otherwise, never silently raised to it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = "a positive whole number" if minimum == 1 else f"a whole number of at least {minimum}"
        raise UserError(f"{what} must be {bound}, got {value!r:.40}")
    return value


def as_seconds(value: object, what: str) -> float:
    """A time bound the caller set (``llm_timeout_s``, ``call_timeout_s``): a finite number of
    seconds above 0; ``UserError`` naming ``what`` otherwise (a bound of 0 would fail or
    degrade every request)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise UserError(f"{what} must be a number of seconds above 0, got {value!r:.40}")
    return float(value)


def as_top_k(top_k: object) -> int | None:
    """``top_k`` checked: None (the full ranking) or an integer of at least 1. Anything else
    is the caller's mistake (``UserError``), never a ranking trimmed to nothing."""
    return None if top_k is None else as_count(top_k, "top_k")


def as_request(
    query: object, candidates: Sequence[CandidateLike], top_k: object = None
) -> tuple[str, list[Candidate], int | None]:
    """One reranking request checked as every stage's ``rerank`` does first: the query
    (``as_query``), the candidates (``as_candidates``) and ``top_k`` (``as_top_k``). A
    custom ``Reranker`` calls it too, so bad input reads the same whatever ranks it."""
    return as_query(query), as_candidates(candidates), as_top_k(top_k)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens spent. Cache hits cost zero."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log-probability and its top alternatives (where a backend gives them)."""

    token: str
    logprob: float
    top: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What one LLM question cost and produced, for audit and replay."""

    prompt_ref: str
    prompt_sha256: str
    backend: str
    model: str
    usage: Usage
    cached: bool
    attempts: int
    reasks: int
    latency_s: float
    cache_key: str
    repairs: Mapping[str, int] = field(default_factory=dict)
    # which sequential round of its plan the call belonged to; calls of one round run concurrently
    round: int = 0
    # the rubric the prompt rendered: ``name@version`` and the sha256 of its canonical content
    rubric_ref: str = ""
    rubric_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_ref": self.prompt_ref,
            "prompt_sha256": self.prompt_sha256,
            "backend": self.backend,
            "model": self.model,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cached": self.cached,
            "attempts": self.attempts,
            "reasks": self.reasks,
            "latency_s": round(self.latency_s, 6),
            "cache_key": self.cache_key,
            "repairs": dict(self.repairs),
            "round": self.round,
            "rubric_ref": self.rubric_ref,
            "rubric_sha256": self.rubric_sha256,
        }


@dataclass(frozen=True, slots=True)
class RankedCandidate:
    """A candidate at its final place. ``score`` strictly decreases with ``rank`` (1-based).

    ``stage_scores`` keeps each stage's own score (LLM grade, cross-encoder logit, ...)
    under the stage's name, so nothing a stage computed is overwritten by the next one.
    """

    candidate: Candidate
    rank: int
    score: float
    stage: str
    stage_scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.candidate.id

    @property
    def text(self) -> str:
        return self.candidate.text


@dataclass(frozen=True, slots=True)
class StageReport:
    """Per-stage observability inside a cascade. ``calls``: the LLM calls the stage paid
    for, a failed stage's included; ``cached_calls``: those answered from the cache, apart."""

    name: str
    kept: int
    latency_s: float
    usage: Usage = Usage()
    calls: int = 0
    cost_usd: float = 0.0
    skipped: bool = False
    degraded_reason: str | None = None
    cached_calls: int = 0


@dataclass(frozen=True)
class Ranking(Sequence[RankedCandidate]):
    """The full reordered candidate list; iterates and indexes like a list of ``RankedCandidate``.

    ``degraded`` is set (with ``degraded_reason``) when a stage failed and an earlier order
    was kept; ``repairs`` counts fixes applied to model output (dropped duplicates, ...).
    """

    query: str
    items: tuple[RankedCandidate, ...]
    calls: tuple[CallRecord, ...] = ()
    degraded: bool = False
    degraded_reason: str | None = None
    repairs: Mapping[str, int] = field(default_factory=dict)
    truncated: int = 0
    stages: tuple[StageReport, ...] = ()

    @overload
    def __getitem__(self, index: int) -> RankedCandidate: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RankedCandidate]: ...
    def __getitem__(self, index: int | slice) -> RankedCandidate | Sequence[RankedCandidate]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[RankedCandidate]:
        return iter(self.items)

    def top(self, k: int) -> list[RankedCandidate]:
        return list(self.items[:k])

    def trimmed(self, top_k: int | None) -> Ranking:
        """The same ranking keeping only the first ``top_k`` items (all when None)."""
        top_k = as_top_k(top_k)
        if top_k is None or top_k >= len(self.items):
            return self
        return replace(self, items=self.items[:top_k])

    def ids(self) -> list[str]:
        return [item.candidate.id for item in self.items]

    @property
    def usage(self) -> Usage:
        total = Usage()
        for call in self.calls:
            total = total + call.usage
        return total

    @property
    def rounds(self) -> int:
        """Sequential LLM round trips: the latency floor with unlimited concurrency."""
        return 1 + max(call.round for call in self.calls) if self.calls else 0

    @property
    def repaired(self) -> bool:
        return any(self.repairs.values())

    def to_dict(self, *, top_k: int | None = None) -> dict[str, Any]:
        items = self.items if top_k is None else self.items[:top_k]
        out: dict[str, Any] = {
            "query": self.query,
            "ranking": [
                {
                    "id": item.candidate.id,
                    "rank": item.rank,
                    "score": item.score,
                    "stage": item.stage,
                    "stage_scores": dict(item.stage_scores),
                }
                for item in items
            ],
            "calls": [call.to_dict() for call in self.calls],
            "degraded": self.degraded,
        }
        if self.degraded_reason:
            out["degraded_reason"] = self.degraded_reason
        if self.repairs:
            out["repairs"] = dict(self.repairs)
        if self.truncated:
            out["truncated"] = self.truncated
        if self.stages:
            out["stages"] = [
                {
                    "name": s.name,
                    "kept": s.kept,
                    "latency_s": round(s.latency_s, 6),
                    "prompt_tokens": s.usage.prompt_tokens,
                    "completion_tokens": s.usage.completion_tokens,
                    "calls": s.calls,
                    "cached_calls": s.cached_calls,
                    "cost_usd": s.cost_usd,
                    "skipped": s.skipped,
                    "degraded_reason": s.degraded_reason,
                }
                for s in self.stages
            ]
        return out
