"""Training a local stage with sentence-transformers' own trainers and losses.

The cross-encoder trains with ``CrossEncoderTrainer`` on lists: one row per query holds a
list of its passages and their graded labels. The default loss is **LambdaLoss** (NDCG
Loss2++ weighting): it weighs every within-query pair by how much swapping the two would
change nDCG, so it uses the grades themselves (a 3 above a 1 matters more than a 1 above a
0) and optimises the metric the cascade is judged on; ``listnet`` (ListNet: cross-entropy
between the label and score softmaxes) is the other listwise choice, ``bce`` (binary
cross-entropy on label / max grade) the pointwise baseline.

The dense stage trains with ``SentenceTransformerTrainer``. The default loss is **CoSENT**:
over every two pairs of a batch whose labels differ, it pushes the cosine of the
higher-labelled pair above the other's, so graded labels become an ordering of
similarities without forcing any pair to a fixed cosine (which ``CosineSimilarityLoss``
would). ``mnrl`` (MultipleNegativesRankingLoss) trains on (query, a passage at or above the
relevance grade, a passage below it from the same query: a hard negative from the first
stage) triplets, with in-batch negatives; it only sees labels as relevant or not.

Validation is ``GradedRerankingEvaluator``: graded nDCG@10 of each validation query's
labelled list (linear gain, log2 discount, as trec_eval). sentence-transformers' own
reranking evaluators count a passage as relevant or not, which would throw the grades away.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .labels import LabelledQuery

__all__ = [
    "CROSS_ENCODER_LOSSES",
    "DENSE_LOSSES",
    "GradedRerankingEvaluator",
    "StudentRun",
    "TrainSettings",
    "ndcg_at",
    "train_student",
]

CROSS_ENCODER_LOSSES = ("lambda", "listnet", "bce")
DENSE_LOSSES = ("cosent", "mnrl")
VALIDATION = "validation"


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters. ``batch_size`` counts lists (queries' slices of ``list_size``
    passages) for the listwise cross-encoder losses and pairs (or triplets) otherwise.
    ``eval_steps``: validate every so many steps (None: about four times an epoch);
    ``patience``: stop after that many validations without a better nDCG@10 (the best
    checkpoint is kept); ``max_steps`` caps the steps (tests, quick tries)."""

    loss: str | None = None
    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_length: int | None = 256
    list_size: int = 32
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


def ndcg_at(labels: Sequence[float], scores: Sequence[float], k: int = 10) -> float | None:
    """Graded nDCG@k of ``labels`` ordered by ``scores`` (ties keep the input order); None
    when no label is positive."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    dcg = sum(labels[i] / math.log2(rank + 2) for rank, i in enumerate(order[:k]))
    ideal = sorted(labels, reverse=True)[:k]
    idcg = sum(label / math.log2(rank + 2) for rank, label in enumerate(ideal))
    return dcg / idcg if idcg > 0 else None


def _evaluator_base() -> type:
    from sentence_transformers.base.evaluation import BaseEvaluator

    return BaseEvaluator  # type: ignore[no-any-return]


class GradedRerankingEvaluator:
    """Mean graded nDCG@10 over validation queries with at least one positive label.
    Built by ``make`` as a subclass of sentence-transformers' ``BaseEvaluator``, so the
    trainer runs it, logs ``eval_validation_ndcg@10`` and early-stops on it."""

    @staticmethod
    def make(queries: Sequence[LabelledQuery], kind: str, *, batch_size: int = 64) -> Any:
        base = _evaluator_base()

        class Evaluator(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__()
                self.name = VALIDATION
                self.primary_metric = "ndcg@10"
                self.queries = [q for q in queries if any(label > 0 for label in q.labels)]

            def score(self, model: Any, query: LabelledQuery) -> list[float]:
                if kind == "cross-encoder":
                    pairs = [(query.query, p) for p in query.passages]
                    out = model.predict(pairs, batch_size=batch_size, show_progress_bar=False)
                    return [float(x) for x in out]
                vectors = model.encode(
                    [query.query, *query.passages],
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                return [float(x) for x in vectors[1:] @ vectors[0]]

            def __call__(
                self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
            ) -> dict[str, float]:
                values = [ndcg_at(q.labels, self.score(model, q)) for q in self.queries]
                kept = [v for v in values if v is not None]
                metrics = {"ndcg@10": sum(kept) / len(kept) if kept else 0.0}
                metrics = self.prefix_name_to_metrics(metrics, self.name)
                self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
                return metrics

        return Evaluator()


def _relevant_grade(settings: TrainSettings, queries: Sequence[LabelledQuery]) -> float:
    if settings.relevant_grade is not None:
        return settings.relevant_grade
    top = max(label for q in queries for label in q.labels)
    return max(1.0, math.ceil(top / 2))  # 0–3 scales: 2, as TREC DL counts "relevant"


def _cross_encoder_rows(
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


def _dense_rows(queries: Sequence[LabelledQuery], settings: TrainSettings, loss: str) -> dict[str, list[Any]]:
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
    threshold = _relevant_grade(settings, queries)
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


@dataclass
class StudentRun:
    """What training did: steps, the validation nDCG@10 before and at the best step."""

    steps: int
    train_rows: int
    validation_before: float | None
    validation_best: float | None
    best_step: int | None
    history: list[dict[str, float]]


def _loss(kind: str, name: str, model: Any) -> Any:
    if kind == "cross-encoder":
        from sentence_transformers.cross_encoder import losses as ce_losses

        if name == "lambda":
            return ce_losses.LambdaLoss(model)
        if name == "listnet":
            return ce_losses.ListNetLoss(model)
        return ce_losses.BinaryCrossEntropyLoss(model)
    from sentence_transformers.sentence_transformer import losses as st_losses

    if name == "cosent":
        return st_losses.CoSENTLoss(model)
    return st_losses.MultipleNegativesRankingLoss(model)


def _progress_callback(echo: Callable[[str], None]) -> Any:
    from transformers import TrainerCallback

    class Lines(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            logs = logs or {}
            parts = [f"step {state.global_step}/{state.max_steps}"]
            if "loss" in logs:
                parts.append(f"loss {logs['loss']:.4f}")
            key = f"eval_{VALIDATION}_ndcg@10"
            if key in logs:
                parts.append(f"validation nDCG@10 {logs[key]:.4f}")
            if len(parts) > 1:
                echo("[distill] " + "; ".join(parts))

    return Lines()


def train_student(
    kind: str,
    base_model: str,
    train: Sequence[LabelledQuery],
    validation: Sequence[LabelledQuery],
    settings: TrainSettings,
    work_dir: str,
    *,
    echo: Callable[[str], None] | None = None,
) -> tuple[Any, StudentRun]:
    """Train a ``kind`` (``cross-encoder`` or ``dense``) student from ``base_model`` on
    ``train``, validating on ``validation`` (may be empty: no early stopping then);
    checkpoints go to ``work_dir``. Returns the (best) model and what happened."""
    try:
        import datasets
        import sentence_transformers as st
        import transformers
    except ImportError as exc:
        raise UserError(
            f'distill needs the train extra ({exc.name} is missing): pip install "llmrerank[train]"'
        ) from None
    emit = echo or (lambda line: print(line, file=sys.stderr))
    loss_name = settings.loss_for(kind)
    transformers.set_seed(settings.seed)
    if kind == "cross-encoder":
        model = st.CrossEncoder(base_model, num_labels=1, max_length=settings.max_length, device="cpu")
        rows = _cross_encoder_rows(train, settings, loss_name)
    else:
        model = st.SentenceTransformer(base_model, device="cpu")
        if settings.max_length is not None:
            model.max_seq_length = settings.max_length
        rows = _dense_rows(train, settings, loss_name)
    n_rows = len(next(iter(rows.values())))
    if n_rows == 0:
        raise UserError(
            "the labels give nothing to train on: every query's passages share one grade"
            if loss_name != "mnrl"
            else "no query has a passage at or above the relevance grade and one below it"
        )
    train_dataset = datasets.Dataset.from_dict(rows)
    evaluator = GradedRerankingEvaluator.make(validation, kind) if validation else None
    before = evaluator(model)[f"{VALIDATION}_ndcg@10"] if evaluator is not None else None
    if before is not None:
        emit(f"[distill] validation nDCG@10 before training: {before:.4f}")
    steps_per_epoch = max(1, math.ceil(n_rows / settings.batch_size))
    total_steps = settings.max_steps or max(1, math.ceil(steps_per_epoch * settings.epochs))
    eval_steps = settings.eval_steps or max(1, steps_per_epoch // 4)
    eval_steps = min(eval_steps, total_steps)
    common: dict[str, Any] = {
        "output_dir": work_dir,
        "num_train_epochs": settings.epochs,
        "max_steps": settings.max_steps or -1,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "warmup_ratio": settings.warmup_ratio,
        "seed": settings.seed,
        "data_seed": settings.seed,
        "logging_steps": max(1, min(eval_steps, 10)),
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "save_total_limit": 1,
    }
    if evaluator is not None:
        common.update(
            eval_strategy="steps",
            eval_steps=eval_steps,
            save_strategy="steps",
            save_steps=eval_steps,
            load_best_model_at_end=True,
            metric_for_best_model=f"eval_{VALIDATION}_ndcg@10",
            greater_is_better=True,
        )
    else:
        common.update(eval_strategy="no", save_strategy="no")
    callbacks = [_progress_callback(emit)]
    if evaluator is not None:
        callbacks.append(transformers.EarlyStoppingCallback(early_stopping_patience=settings.patience))
    if kind == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

        trainer: Any = CrossEncoderTrainer(
            model=model,
            args=CrossEncoderTrainingArguments(**common),
            train_dataset=train_dataset,
            loss=_loss(kind, loss_name, model),
            evaluator=evaluator,
            callbacks=callbacks,
        )
    else:
        from sentence_transformers.sentence_transformer import (
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )

        if loss_name == "mnrl":
            common["batch_sampler"] = "no_duplicates"
        trainer = SentenceTransformerTrainer(
            model=model,
            args=SentenceTransformerTrainingArguments(**common),
            train_dataset=train_dataset,
            loss=_loss(kind, loss_name, model),
            evaluator=evaluator,
            callbacks=callbacks,
        )
    trainer.train()
    key = f"eval_{VALIDATION}_ndcg@10"
    history = [
        {"step": float(entry["step"]), "ndcg@10": float(entry[key])}
        for entry in trainer.state.log_history
        if key in entry
    ]
    best = max(history, key=lambda h: h["ndcg@10"]) if history else None
    if before is not None and best is not None and before >= best["ndcg@10"]:
        emit("[distill] no validation gain over the base model; the trained weights are kept anyway")
    return trainer.model, StudentRun(
        steps=int(trainer.state.global_step),
        train_rows=n_rows,
        validation_before=before,
        validation_best=None if best is None else best["ndcg@10"],
        best_step=None if best is None else int(best["step"]),
        history=history,
    )
