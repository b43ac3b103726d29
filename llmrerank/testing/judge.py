"""A simulated relevance judge: answers reranking prompts from relevance labels.

It is a ``WireServer`` handler, so strategies are tested and benchmarked through the real
SDKs over HTTP. It reads the prompt contract every shipped template follows — the query in
``<query>…</query>``, each passage in ``<passage id="LABEL">…</passage>`` — and the task
from the requested output schema (or a ``Task: NAME`` line in the system prompt).
Every answer comes from one noise model (``latent.LatentJudgement``): each pair's perceived
relevance is its label + ``sigma`` · N(0, 1), fixed per pair, plus an optional
``position_bias`` (the probability of preferring what is shown first). Randomness is seeded
by the pair or the request, so answers do not depend on call order or concurrency. Asked
for logprobs (OpenAI ``logprobs``/``top_logprobs``), a permutation reply carries the first
label's top alternatives, for first-token scoring.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .latent import LatentJudgement
from .server import Reply, WireRequest

__all__ = ["SimulatedJudge", "normalise", "parse_prompt"]

_QUERY = re.compile(r"<query>(.*?)</query>", re.DOTALL)
_PASSAGE = re.compile(r'<passage id="([^"]+)">\n?(.*?)\n?</passage>', re.DOTALL)
# v2 prompts quote between per-request boundary markers: <query-B>…</query-B>
_BOUNDED_QUERY = re.compile(r"<query-([0-9a-f]+)>\n(.*?)\n</query-\1>", re.DOTALL)
_TASK = re.compile(r"^Task: (\w+)", re.MULTILINE)
_PREFIX = 80


def normalise(text: str) -> str:
    """Unescaped, whitespace-collapsed text without the truncation mark."""
    text = html.unescape(text)
    text = text.removesuffix(" …")
    return " ".join(text.split())


class SimulatedJudge:
    """``labels`` maps (query text, passage text) to graded relevance; unknown passages are 0."""

    def __init__(
        self,
        labels: Mapping[tuple[str, str], int],
        *,
        sigma: float = 0.0,
        position_bias: float = 0.0,
        seed: int = 0,
        max_label: int = 3,
    ) -> None:
        self.model = LatentJudgement(sigma=sigma, position_bias=position_bias, seed=seed)
        self.seed = seed
        self.max_label = max_label
        # exact text first; a prefix for passages the prompt truncated
        self._index: dict[tuple[str, str], int] = {}
        self._prefix_index: dict[tuple[str, str], int] = {}
        for (query, passage), rel in labels.items():
            key = " ".join(query.split())
            text = normalise(passage)
            self._index[(key, text)] = rel
            self._prefix_index[(key, text[:_PREFIX])] = rel
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_trec(cls, candidates_jsonl: str | Path, qrels: str | Path, **options: Any) -> SimulatedJudge:
        """From a candidates JSONL (``qid, query, candidates[docid, text]``) and TREC qrels."""
        judgments: dict[tuple[str, str], int] = {}
        for line in Path(qrels).read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                judgments[(parts[0], parts[2])] = int(parts[3])
        labels: dict[tuple[str, str], int] = {}
        for line in Path(candidates_jsonl).read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            for candidate in record["candidates"]:
                docid = str(candidate.get("docid", candidate.get("id")))
                rel = max(0, judgments.get((str(record["qid"]), docid), 0))
                labels[(record["query"], candidate["text"])] = rel
        return cls(labels, **options)

    @classmethod
    def from_judgements(
        cls,
        queries: Mapping[str, str],
        passages: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        **options: Any,
    ) -> SimulatedJudge:
        """From query and passage texts by id and qrels (query id → doc id → grade), as BEIR
        sets give them; unjudged pairs read as 0. Binary qrels (every grade 0 or 1) read
        "relevant" as the top of the judge's scale (``max_label``), so ``sigma`` means the
        same noise, in grades, as on a graded set: with 1 as the only relevant grade, a
        0–3 judge at sigma 1 could hardly tell a relevant passage from the other ninety-nine."""
        grades = [grade for judged in qrels.values() for grade in judged.values()]
        top = int(options.get("max_label", 3))
        scale = top if grades and max(grades) == 1 else 1
        labels: dict[tuple[str, str], int] = {}
        for qid, judged in qrels.items():
            if qid not in queries:
                continue
            for docid, grade in judged.items():
                if grade > 0 and docid in passages:
                    labels[(queries[qid], passages[docid])] = grade * scale
        return cls(labels, **options)

    def relevance(self, query: str, passage: str) -> int:
        key, text = " ".join(query.split()), normalise(passage)
        exact = self._index.get((key, text))
        if exact is not None:
            return exact
        return self._prefix_index.get((key, text[:_PREFIX]), 0)

    def _rng(self, request: WireRequest) -> random.Random:
        material = json.dumps([self.seed, request.body], sort_keys=True).encode()
        return random.Random(hashlib.sha256(material).digest())

    def __call__(self, request: WireRequest) -> Reply:
        task = request.schema_name
        if task is None:
            match = _TASK.search(request.system_text)
            task = match.group(1) if match else "unknown"
        with self._lock:
            self.calls[task] += 1
        query, texts = parse_prompt(request.user_text)
        query_key = " ".join(query.split())
        passages = [
            (label, self.model.perceived(query_key, normalise(text)[:_PREFIX], self.relevance(query, text)))
            for label, text in texts
        ]
        rng = self._rng(request)
        answer, first_label_top = self._answer(task, passages, request.schema, rng)
        text = _cut(
            json.dumps(answer), request.body.get("max_tokens") or request.body.get("max_completion_tokens")
        )
        logprobs = None
        if first_label_top is not None and request.body.get("logprobs"):
            logprobs = _permutation_logprobs(
                text, first_label_top, int(request.body.get("top_logprobs") or 1)
            )
        return Reply(
            text,
            prompt_tokens=max(1, request.prompt_words),
            completion_tokens=len(text.split()),
            logprobs=logprobs,
        )

    def _answer(
        self,
        task: str,
        passages: list[tuple[str, float]],
        schema: Mapping[str, Any] | None,
        rng: random.Random,
    ) -> tuple[dict[str, Any], list[tuple[str, float]] | None]:
        labels = [label for label, _ in passages]
        scores = [score for _, score in passages]
        if task == "relevance_grade":
            grades = _grade_scale(schema) or list(range(self.max_label + 1))
            score = scores[0] if scores else 0.0
            return {"grade": self.model.grade(score, self.max_label, grades)}, None
        if task == "permutation":
            order = self.model.order(scores, rng)
            first_token = self.model.first_token_logprobs(scores, order)
            return {"ranking": [labels[i] for i in order]}, [
                (labels[i], lp) for i, lp in zip(order, first_token, strict=True)
            ]
        if task == "preference":
            first_wins = self.model.prefer_first(scores[0], scores[1], rng)
            return {"winner": "A" if first_wins else "B"}, None
        if task == "best_choice":
            return {"best": labels[self.model.best(scores, rng)]}, None
        return {"error": f"unknown task {task!r}"}, None


def _cut(text: str, max_tokens: Any) -> str:
    """A reply cut at ``max_tokens`` (whitespace words), as a model stops at its limit."""
    words = text.split(" ")
    return " ".join(words[: int(max_tokens)]) if max_tokens and len(words) > int(max_tokens) else text


def _permutation_logprobs(text: str, top: list[tuple[str, float]], n_top: int) -> list[dict[str, Any]]:
    """OpenAI-shaped token entries for ``{"ranking": ["L1", ...]}``: the text before the
    first label, the first label with its top alternatives, and the rest."""
    first_label, first_logprob = top[0]
    head, _, tail = text.partition(f'"{first_label}"')
    alternatives = [{"token": label, "logprob": lp, "bytes": None} for label, lp in top[: max(1, n_top)]]
    return [
        {"token": head + '"', "logprob": 0.0, "bytes": None, "top_logprobs": []},
        {"token": first_label, "logprob": first_logprob, "bytes": None, "top_logprobs": alternatives},
        {"token": '"' + tail, "logprob": 0.0, "bytes": None, "top_logprobs": []},
    ]


def parse_prompt(user: str) -> tuple[str, list[tuple[str, str]]]:
    """The query and the ``(label, text)`` passages of a rendered user message: boundary
    markers (v2 prompts, text as written) or the plain tags of v1 (HTML-escaped text)."""
    bounded = _BOUNDED_QUERY.search(user)
    if bounded:
        boundary = re.escape(bounded.group(1))
        passage = re.compile(rf'<passage-{boundary} id="([^"]+)">\n(.*?)\n</passage-{boundary}>', re.DOTALL)
        return bounded.group(2), passage.findall(user)
    query_match = _QUERY.search(user)
    query = html.unescape(query_match.group(1)) if query_match else ""
    return query, _PASSAGE.findall(user)


def _grade_scale(schema: Mapping[str, Any] | None) -> list[int] | None:
    if not schema:
        return None
    grade = schema.get("properties", {}).get("grade", {})
    if "enum" in grade:
        return sorted(int(g) for g in grade["enum"])
    if "minimum" in grade and "maximum" in grade:
        return list(range(int(grade["minimum"]), int(grade["maximum"]) + 1))
    return None
