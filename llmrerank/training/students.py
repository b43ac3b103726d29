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

import importlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .labels import LabelledQuery
from .rows import TrainSettings, cross_encoder_rows, dense_rows

__all__ = [
    "GradedRerankingEvaluator",
    "StudentRun",
    "ndcg_at",
    "train_student",
]

VALIDATION = "validation"


def ndcg_at(labels: Sequence[float], scores: Sequence[float], k: int = 10) -> float | None:
    """Graded nDCG@k of ``labels`` ordered by ``scores`` (ties keep the input order); None
    when no label is positive."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    dcg = sum(labels[i] / math.log2(rank + 2) for rank, i in enumerate(order[:k]))
    ideal = sorted(labels, reverse=True)[:k]
    idcg = sum(label / math.log2(rank + 2) for rank, label in enumerate(ideal))
    return dcg / idcg if idcg > 0 else None


class GradedRerankingEvaluator:
    """Mean graded nDCG@10 over validation queries with at least one positive label.
    Built by ``make`` as a subclass of sentence-transformers' ``BaseEvaluator``, so the
    trainer runs it, logs ``eval_validation_ndcg@10`` and early-stops on it."""

    @staticmethod
    def make(queries: Sequence[LabelledQuery], kind: str, *, batch_size: int = 64) -> Any:
        from sentence_transformers.base.evaluation import BaseEvaluator

        class Evaluator(BaseEvaluator):
            def __init__(self) -> None:
                super().__init__()  # type: ignore[no-untyped-call]
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
    # through importlib: transformers ships type hints, and mypy would otherwise check it all
    trainer_callback: Any = importlib.import_module("transformers").TrainerCallback

    class Lines(trainer_callback):  # type: ignore[misc]
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

        importlib.import_module("sentence_transformers")
        transformers: Any = importlib.import_module("transformers")
    except ImportError as exc:
        raise UserError(
            f'distill needs the train extra ({exc.name} is missing): pip install "llmrerank[train]"'
        ) from None
    emit = echo or (lambda line: print(line, file=sys.stderr))
    settings = settings.resolved(kind)
    loss_name = settings.loss_for(kind)
    batch_size = settings.batch_size or 1
    transformers.set_seed(settings.seed)
    model = _load_student(kind, base_model, settings)
    if kind == "cross-encoder":
        rows = cross_encoder_rows(train, settings, loss_name)
    else:
        rows = dense_rows(train, settings, loss_name)
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
    steps_per_epoch = max(1, math.ceil(n_rows / batch_size))
    total_steps = settings.max_steps or max(1, math.ceil(steps_per_epoch * settings.epochs))
    eval_steps = settings.eval_steps or max(1, steps_per_epoch // 4)
    eval_steps = min(eval_steps, total_steps)
    emit(
        f"[distill] {kind} from {base_model}: {n_rows} training rows ({loss_name}), batch {batch_size}, "
        f"lr {settings.learning_rate}, {total_steps} steps"
        + (f", validating every {eval_steps}" if evaluator is not None else ", no validation")
    )
    common: dict[str, Any] = {
        "output_dir": work_dir,
        "num_train_epochs": settings.epochs,
        "max_steps": settings.max_steps or -1,
        "per_device_train_batch_size": batch_size,
        "learning_rate": settings.learning_rate,
        "warmup_steps": settings.warmup_ratio,  # a float below 1: a share of the steps
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
    # our own progress lines replace the trainer's printed log dicts
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    key = f"eval_{VALIDATION}_ndcg@10"
    history = [
        {"step": float(entry["step"]), "ndcg@10": float(entry[key])}
        for entry in trainer.state.log_history
        if key in entry
    ]
    best = max(history, key=lambda h: h["ndcg@10"]) if history else None
    model = trainer.model
    if before is not None and best is not None and before >= best["ndcg@10"]:
        # early stopping counts the base model as step 0: no step beat it, so it is the output
        emit(
            f"[distill] no step beat the base model on validation ({best['ndcg@10']:.4f} at best, "
            f"base {before:.4f}): the output keeps the base model's weights"
        )
        model = _load_student(kind, base_model, settings)
        best = {"step": 0.0, "ndcg@10": before}
    return model, StudentRun(
        steps=int(trainer.state.global_step),
        train_rows=n_rows,
        validation_before=before,
        validation_best=None if best is None else best["ndcg@10"],
        best_step=None if best is None else int(best["step"]),
        history=history,
    )


def _load_student(kind: str, base_model: str, settings: TrainSettings) -> Any:
    import sentence_transformers as st

    if kind == "cross-encoder":
        return st.CrossEncoder(base_model, num_labels=1, max_length=settings.max_length, device="cpu")
    model = st.SentenceTransformer(base_model, device="cpu")
    if settings.max_length is not None:
        model.max_seq_length = settings.max_length
    return model
