"""The books of an eval run: one line per finished query (its calls, tokens and cost) in
the run's ``Checkpoint``, and the replies paid for queries not finished yet, so a run killed
and resumed prices every reply it paid for once, even those a resumed query now finds in
the cache.

Every executor (online, provider batches, Ray) appends its finished queries through the
one ``Checkpoint``; the runner reads it back to resume and to summarise.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from ..pricing import PriceTable
from ..types import CallRecord, Ranking, Usage

__all__ = ["Checkpoint", "PaidCalls", "PaidJournal", "query_record", "stage_scores"]


def query_record(qid: str, ranking: Ranking, latency: float, prices: PriceTable) -> dict[str, Any]:
    """One finished query's line in a run's checkpoint: its run, latency, calls and cost.

    ``calls`` counts paid calls only; a question answered from the cache (filled by an
    earlier run, or by an earlier query of this one) is a cache hit (``cached_calls``),
    priced at $0. A degraded query's calls are its paid ones all the same.
    """
    calls = ranking.calls
    cost = prices.cost_of(calls)
    return {
        "qid": qid,
        "run": {item.id: item.score for item in ranking},
        "latency_s": latency,
        "calls": sum(not c.cached for c in calls),
        "cached_calls": sum(c.cached for c in calls),
        "prompt_tokens": ranking.usage.prompt_tokens,
        "completion_tokens": ranking.usage.completion_tokens,
        "reasks": sum(c.reasks for c in calls),
        "cost_usd": cost,
        "repairs": dict(ranking.repairs),
        "degraded": ranking.degraded_reason,
        "prompts": sorted({(c.prompt_ref, c.prompt_sha256) for c in calls}),
        "rubrics": sorted({(c.rubric_ref, c.rubric_sha256) for c in calls if c.rubric_ref}),
        # each stage's own score per passage (the LLM's grades, for the agreement report)
        "stage_scores": stage_scores(ranking),
        "models": sorted({f"{c.backend}:{c.model}" for c in calls}),
    }


def _read_jsonl(path: Path) -> list[Any]:
    rows = []
    if path.exists():
        for line in path.read_text("utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
    return rows


class Checkpoint:
    """One run's finished queries (``done``, by qid), kept as a JSONL file of their records:
    each ``append`` is written and flushed at once, so a run killed at any point resumes
    with every query it finished. Leaving a ``with`` block closes the file (a later append
    opens it again); ``finish`` deletes it once the run's results are written."""

    SUFFIX = ".partial.jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {record["qid"]: record for record in _read_jsonl(path)}
        self._sink: TextIO | None = None

    def beside(self, suffix: str) -> Path:
        """A file of the same run next to the checkpoint (``.paid.jsonl``, ``.batch.json``)."""
        return self.path.with_name(self.path.name.removesuffix(self.SUFFIX) + suffix)

    def append(self, record: dict[str, Any]) -> None:
        if self._sink is None:
            self._sink = self.path.open("a", encoding="utf-8")
        self._sink.write(json.dumps(record) + "\n")
        self._sink.flush()
        self.done[record["qid"]] = record

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def finish(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def stage_scores(ranking: Ranking) -> dict[str, dict[str, float]]:
    """Each stage's score per passage; the first stage's ("input") is the dataset's own."""
    scores: dict[str, dict[str, float]] = {}
    for item in ranking:
        for stage, value in item.stage_scores.items():
            if stage != "input":
                scores.setdefault(stage, {})[item.id] = value
    return scores


class PaidCalls:
    """Replies a run paid for, per query (``qid``) and request (the call's cache key), until
    the query's record is written. ``entries`` rows are ``[qid, key, prompt_tokens,
    completion_tokens, replies]``; those of ``finished`` queries are dropped on loading."""

    def __init__(self, entries: Iterable[Sequence[Any]] = (), finished: Collection[str] = ()) -> None:
        # paid in an earlier process of this run; then, paid in this one
        self.carried: dict[str, dict[str, list[int]]] = {}
        self.booked: dict[str, dict[str, list[int]]] = {}
        for qid, key, prompt, completion, replies in entries:
            if qid not in finished:
                self._add(self.carried, str(qid), str(key), int(prompt), int(completion), int(replies))

    @staticmethod
    def _add(
        books: dict[str, dict[str, list[int]]], qid: str, key: str, prompt: int, completion: int, replies: int
    ) -> None:
        entry = books.setdefault(qid, {}).setdefault(key, [0, 0, 0])
        entry[0] += prompt
        entry[1] += completion
        entry[2] += replies

    def book(self, qid: str, key: str, usage: Usage, replies: int = 1) -> None:
        """``replies`` paid for query ``qid``'s request ``key`` in this process."""
        self._add(self.booked, qid, key, usage.prompt_tokens, usage.completion_tokens, replies)

    def entries(self) -> list[list[Any]]:
        return [
            [qid, key, *entry]
            for books in (self.carried, self.booked)
            for qid, keys in books.items()
            for key, entry in keys.items()
        ]

    def settle(self, qid: str, calls: Sequence[CallRecord]) -> tuple[CallRecord, ...]:
        """Query ``qid`` finished: its calls, each with what an earlier process of this run
        paid for the same request added (the answer then came from the cache here, but this
        run bought it). What was booked for the query is dropped: its record carries it now."""
        carried = self.carried.pop(qid, {})
        self.booked.pop(qid, None)
        settled = []
        for call in calls:
            entry = carried.pop(call.cache_key, None)
            if entry is None:
                settled.append(call)
                continue
            prompt, completion, replies = entry
            # every reply past the first one of this call counts as a re-ask
            extra = replies - 1 if call.cached else replies
            settled.append(
                replace(
                    call,
                    usage=call.usage + Usage(prompt, completion),
                    cached=False,
                    reasks=call.reasks + extra,
                )
            )
        return tuple(settled)


class PaidJournal:
    """The online runner's ``PaidCalls``, kept as an append-only JSONL file beside the
    checkpoint: one line per paid call as it finishes, so a killed run's query in flight is
    priced with what it had paid when the resumed run answers it from the cache."""

    def __init__(self, path: Path, finished: Collection[str]) -> None:
        self.path = path
        self.paid = PaidCalls(_read_jsonl(path), finished)
        self._sink: TextIO | None = None
        self._lock = threading.Lock()  # calls of one round finish in several threads

    def writer(self, qid: str) -> Callable[[CallRecord], None]:
        """Journals each paid call of query ``qid`` (cache hits are not)."""

        def write(call: CallRecord) -> None:
            if call.cached:
                return
            usage = call.usage
            row = [qid, call.cache_key, usage.prompt_tokens, usage.completion_tokens, 1 + call.reasks]
            with self._lock:
                if self._sink is None:
                    self._sink = self.path.open("a", encoding="utf-8")
                self._sink.write(json.dumps(row) + "\n")
                self._sink.flush()

        return write

    def finish(self) -> None:
        if self._sink is not None:
            self._sink.close()
        self.path.unlink(missing_ok=True)
