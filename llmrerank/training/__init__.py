"""Teach the local stage the team's rubric: label with the LLM once, distil, evaluate.

* ``label_queries(spec, queries, "labels.jsonl")``: a pipeline's LLM stage grades (or
  orders) each query's candidates; the labels file keeps model, prompt and rubric hashes.
  ``labels_from_golden`` turns an eval dataset's qrels into the same format.
* ``distill("labels.jsonl", "cross-encoder:", "models/kb-ce")``: a sentence-transformers
  fine-tune with a query-level validation split, early stopping on nDCG@10 and a model card;
  the folder then loads as ``cross-encoder:models/kb-ce`` wherever a stage spec does.
"""

from __future__ import annotations

from .distill import TRAINING_RECORD, check_leakage, distill, read_excluded_queries, split_queries
from .labels import (
    LabelledQuery,
    LabelRecord,
    group_by_query,
    iter_labels,
    labels_from_golden,
    normalise_query,
    read_labels,
    rubric_sha256,
    write_labels,
)
from .students import CROSS_ENCODER_LOSSES, DENSE_LOSSES, TrainSettings, ndcg_at
from .teacher import (
    LabelQuery,
    LabelRun,
    label_queries,
    position_grade,
    progress_printer,
    queries_from_golden,
    read_queries,
    teacher_provenance,
)

__all__ = [
    "CROSS_ENCODER_LOSSES",
    "DENSE_LOSSES",
    "TRAINING_RECORD",
    "LabelQuery",
    "LabelRecord",
    "LabelRun",
    "LabelledQuery",
    "TrainSettings",
    "check_leakage",
    "distill",
    "group_by_query",
    "iter_labels",
    "label_queries",
    "labels_from_golden",
    "ndcg_at",
    "normalise_query",
    "position_grade",
    "progress_printer",
    "queries_from_golden",
    "read_excluded_queries",
    "read_labels",
    "read_queries",
    "rubric_sha256",
    "split_queries",
    "teacher_provenance",
    "write_labels",
]
