"""Training rows from labelled queries, in the shape each sentence-transformers loss reads.

* listwise cross-encoder losses (LambdaLoss, ListNet): ``{"query", "docs", "labels"}``, a
  query's passages shuffled (seeded) and cut into lists of ``list_size``; a list whose
  passages share one grade teaches nothing and is left out;
* ``bce``: ``{"query", "passage", "label"}`` with label / highest grade;
* ``cosent``: ``{"query", "passage", "score"}`` with label / highest grade;
* ``mnrl``: ``{"query", "positive", "negative"}``: each passage at or above the relevance
  grade with a passage below it from the same query (a first-stage hard negative).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UserError
from .labels import LabelledQuery

__all__ = [
    "CROSS_ENCODER_LOSSES",
    "DENSE_LOSSES",
    "TrainSettings",
    "cross_encoder_rows",
    "dense_rows",
    "relevant_grade",
]

CROSS_ENCODER_LOSSES = ("lambda", "listnet", "bce")
DENSE_LOSSES = ("cosent", "mnrl")


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters; None picks the stage's default (``resolved``). ``batch_size``
    counts lists (queries' slices of ``list_size`` passages) for the listwise cross-encoder
    losses (default 4) and pairs or triplets otherwise (default 32). ``learning_rate``:
    3e-5 for the cross-encoder, 1e-5 for the dense stage (it starts from a good bi-encoder
    and is easily pulled off it). ``eval_steps``: validate every so many steps (None: about
    four times an epoch); ``patience``: stop after that many validations without a better
    nDCG@10 (the best checkpoint is kept); ``max_steps`` caps the steps (tests, quick tries).
    ``max_length`` 256 fits SciFact-length abstracts; 128 is enough (and faster) for
    MS MARCO-length passages."""

    loss: str | None = None
    epochs: float = 1.0
    batch_size: int | None = None
    learning_rate: float | None = None
    warmup_ratio: float = 0.1
    max_length: int | None = 256
    list_size: int = 25
    relevant_grade: float | None = None
    eval_steps: int | None = None
    patience: int = 3
    max_steps: int | None = None
    seed: int = 0

    def loss_for(self, kind: str) -> str:
        choices = CROSS_ENCODER_LOSSES if kind == "cross-encoder" else DENSE_LOSSES
        loss = self.loss or choices[0]
        if loss not in choices:
            raise UserError(f"loss {loss!r} is not one for a {kind} stage; use one of {list(choices)}")
        return loss

    def resolved(self, kind: str) -> TrainSettings:
        """These settings with every None default filled in for a ``kind`` stage."""
        loss = self.loss_for(kind)
        listwise = loss in ("lambda", "listnet")
        return replace(
            self,
            loss=loss,
            batch_size=self.batch_size or (4 if listwise else 32),
            learning_rate=self.learning_rate or (3e-5 if kind == "cross-encoder" else 1e-5),
        )


def relevant_grade(settings: TrainSettings, queries: Sequence[LabelledQuery]) -> float:
    if settings.relevant_grade is not None:
        return settings.relevant_grade
    top = max(label for q in queries for label in q.labels)
    return max(1.0, math.ceil(top / 2))  # 0–3 scales: 2, as TREC DL counts "relevant"


def cross_encoder_rows(
    queries: Sequence[LabelledQuery], settings: TrainSettings, loss: str
) -> dict[str, list[Any]]:
    rng = random.Random(settings.seed)
    if loss == "bce":
        top = max(label for q in queries for label in q.labels) or 1.0
        rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
        for q in queries:
            for passage, label in zip(q.passages, q.labels, strict=True):
                rows["query"].append(q.query)
                rows["passage"].append(passage)
                rows["label"].append(label / top)
        return rows
    rows = {"query": [], "docs": [], "labels": []}
    for q in queries:
        indices = list(range(len(q.passages)))
        rng.shuffle(indices)  # each slice mixes the teacher's top and bottom
        for start in range(0, len(indices), settings.list_size):
            chunk = indices[start : start + settings.list_size]
            if len({q.labels[i] for i in chunk}) < 2:
                continue  # one grade throughout: nothing to order
            rows["query"].append(q.query)
            rows["docs"].append([q.passages[i] for i in chunk])
            rows["labels"].append([q.labels[i] for i in chunk])
    return rows


def dense_rows(queries: Sequence[LabelledQuery], settings: TrainSettings, loss: str) -> dict[str, list[Any]]:
    if loss == "cosent":
        top = max(label for q in queries for label in q.labels) or 1.0
        rows: dict[str, list[Any]] = {"query": [], "passage": [], "score": []}
        for q in queries:
            for passage, label in zip(q.passages, q.labels, strict=True):
                rows["query"].append(q.query)
                rows["passage"].append(passage)
                rows["score"].append(label / top)
        return rows
    rng = random.Random(settings.seed)
    threshold = relevant_grade(settings, queries)
    rows = {"query": [], "positive": [], "negative": []}
    for q in queries:
        positives = [p for p, label in zip(q.passages, q.labels, strict=True) if label >= threshold]
        negatives = [p for p, label in zip(q.passages, q.labels, strict=True) if label < threshold]
        if not negatives:
            continue
        for positive in positives:
            rows["query"].append(q.query)
            rows["positive"].append(positive)
            rows["negative"].append(rng.choice(negatives))
    return rows
