"""A simulated relevance judge: answers reranking prompts from relevance labels.

It is a ``WireServer`` handler, so strategies are tested and benchmarked through the real
SDKs over HTTP. It reads the prompt contract every shipped template follows — the query in
``<query>…</query>``, each passage in ``<passage id="LABEL">…</passage>`` — and the task
from the requested output schema (or a ``Task: NAME`` line in the system prompt).
With ``error_rate`` > 0 an answer is corrupted with that probability (in a permutation,
each adjacent pair is swapped with that probability); the randomness is seeded by the
request itself, so answers do not depend on call order or concurrency.
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
        error_rate: float = 0.0,
        seed: int = 0,
        max_label: int = 3,
    ) -> None:
        self.error_rate = error_rate
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
        passages = [(label, self.relevance(query, text)) for label, text in texts]
        rng = self._rng(request)
        noisy = rng.random() < self.error_rate
        answer = self._answer(task, passages, request.schema, rng, noisy)
        text = json.dumps(answer)
        return Reply(text, prompt_tokens=max(1, request.prompt_words), completion_tokens=len(text.split()))

    def _answer(
        self,
        task: str,
        passages: list[tuple[str, int]],
        schema: Mapping[str, Any] | None,
        rng: random.Random,
        noisy: bool,
    ) -> dict[str, Any]:
        labels = [label for label, _ in passages]
        if task == "relevance_grade":
            grades = _grade_scale(schema) or list(range(self.max_label + 1))
            rel = passages[0][1] if passages else 0
            position = round(rel / self.max_label * (len(grades) - 1)) if self.max_label else 0
            grade = rng.choice(grades) if noisy else grades[position]
            return {"grade": grade}
        if task == "permutation":
            order = [label for label, _ in sorted(passages, key=lambda p: -p[1])]
            # noise: each adjacent pair is swapped with probability error_rate
            for i in range(len(order) - 1):
                if rng.random() < self.error_rate:
                    order[i], order[i + 1] = order[i + 1], order[i]
            return {"ranking": order}
        if task == "preference":
            first, second = passages[0][1], passages[1][1]
            winner = "A" if first >= second else "B"
            if noisy:
                winner = "B" if winner == "A" else "A"
            return {"winner": winner}
        if task == "best_choice":
            best = max(range(len(passages)), key=lambda i: (passages[i][1], -i))
            if noisy and len(labels) > 1:
                best = rng.choice([i for i in range(len(labels)) if i != best])
            return {"best": labels[best]}
        return {"error": f"unknown task {task!r}"}


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
