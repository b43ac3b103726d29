"""The labels file: graded query–passage pairs with where each label came from.

One JSON object a line, so a labelling run appends as it goes and a file can be read,
grepped and concatenated with ordinary tools::

    {"query_id": "1030303", "query": "who is aziz hashim",
     "passage_id": "8726436", "passage": "Aziz Hashim ...", "label": 3,
     "provenance": {"source": "llm", "model": "openai:gpt-4o-mini", "strategy": "pointwise",
                    "prompt": "pointwise/relevance@2", "prompt_sha256": "…",
                    "rubric": "support-kb", "rubric_sha256": "…", "mapping": "grade",
                    "scale": [0, 3]}}

``label`` is a number on the rubric's scale (an integer grade, or a fractional expected
grade with log-probabilities); ``score`` (optional) is the teacher's raw score and ``rank``
/ ``of`` (optional) the passage's position in the teacher's order. ``provenance`` says who
gave the label: ``source`` is ``llm`` (a teacher pass, with model, strategy, prompt and
rubric with their sha256) or ``qrels`` (converted human judgements: ``dataset`` names
them). The rubric's sha256 is taken over its canonical content (sorted-key JSON of its
fields), so re-formatting its YAML file does not change it; the prompt's is the sha256 the
prompt library pins for that version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import UserError
from ..rubrics import Rubric

__all__ = [
    "LabelRecord",
    "LabelledQuery",
    "append_labels",
    "file_sha256",
    "group_by_query",
    "iter_labels",
    "labels_from_golden",
    "normalise_query",
    "read_labels",
    "repair_tail",
    "rubric_sha256",
    "write_labels",
]

SOURCES = ("llm", "qrels")


def normalise_query(text: str) -> str:
    """Case- and whitespace-folded query text: what the leakage check compares."""
    return " ".join(text.casefold().split())


def rubric_sha256(rubric: Rubric) -> str:
    """sha256 of the rubric's canonical content (independent of its YAML formatting)."""
    canonical = json.dumps(rubric.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class LabelRecord:
    """One labelled query–passage pair (see the module docstring for the fields)."""

    query_id: str
    query: str
    passage_id: str
    passage: str
    label: float
    provenance: Mapping[str, Any] = field(default_factory=dict)
    score: float | None = None
    rank: int | None = None
    of: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query_id": self.query_id,
            "query": self.query,
            "passage_id": self.passage_id,
            "passage": self.passage,
            "label": int(self.label) if float(self.label).is_integer() else self.label,
        }
        for key in ("score", "rank", "of"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["provenance"] = dict(self.provenance)
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "labels") -> LabelRecord:
        """Validate one parsed line; errors say ``where`` (file and line) and what is wrong."""
        if not isinstance(raw, dict):
            raise UserError(f"{where}: a label line is a JSON object, got {type(raw).__name__}")
        missing = [k for k in ("query_id", "query", "passage_id", "passage", "label") if k not in raw]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}")
        for key in ("query_id", "passage_id"):
            if not isinstance(raw[key], (str, int)) or isinstance(raw[key], bool) or str(raw[key]) == "":
                raise UserError(f"{where}: {key} must be a non-empty string or integer")
        for key in ("query", "passage"):
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise UserError(f"{where}: {key} must be non-empty text")
        label = raw["label"]
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not math.isfinite(label):
            raise UserError(f"{where}: label must be a finite number, got {label!r}")
        if label < 0:
            raise UserError(f"{where}: label must be >= 0 (a grade on the rubric's scale), got {label}")
        provenance = raw.get("provenance", {})
        if not isinstance(provenance, dict):
            raise UserError(f"{where}: provenance must be an object")
        source = provenance.get("source")
        if source is not None and source not in SOURCES:
            raise UserError(f"{where}: provenance.source must be one of {list(SOURCES)}, got {source!r}")
        score = raw.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise UserError(f"{where}: score must be a number")
        for key in ("rank", "of"):
            value = raw.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{where}: {key} must be a positive integer")
        unknown = set(raw) - {
            "query_id",
            "query",
            "passage_id",
            "passage",
            "label",
            "provenance",
            "score",
            "rank",
            "of",
        }
        if unknown:
            raise UserError(f"{where}: unknown keys {sorted(unknown)}")
        return cls(
            query_id=str(raw["query_id"]),
            query=raw["query"],
            passage_id=str(raw["passage_id"]),
            passage=raw["passage"],
            label=float(label),
            provenance=provenance,
            score=None if score is None else float(score),
            rank=raw.get("rank"),
            of=raw.get("of"),
        )


def iter_labels(path: str | os.PathLike[str]) -> Iterator[LabelRecord]:
    """The records of a labels file, one at a time; a malformed line raises ``UserError``
    naming the file and the line."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; read as bytes to name bad lines
    except OSError as exc:
        raise UserError(f"cannot read labels {path}: {exc.strerror}") from None
    seen: set[tuple[str, str]] = set()
    with handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not JSON ({exc.msg})") from None
            except RecursionError:
                raise UserError(f"{where}: nested too deeply") from None
            record = LabelRecord.from_dict(parsed, where=where)
            pair = (record.query_id, record.passage_id)
            if pair in seen:
                raise UserError(f"{where}: query {pair[0]} passage {pair[1]} is labelled twice")
            seen.add(pair)
            yield record


def read_labels(path: str | os.PathLike[str]) -> list[LabelRecord]:
    """Every record of a labels file, validated (see ``iter_labels``); an empty file is an error."""
    records = list(iter_labels(path))
    if not records:
        raise UserError(f"labels {path} holds no labels")
    return records


def _lines(records: Iterable[LabelRecord]) -> str:
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)


def write_labels(path: str | os.PathLike[str], records: Iterable[LabelRecord]) -> int:
    """Write (replace) a labels file; returns the number of records."""
    text = _lines(records)
    Path(path).write_text(text, "utf-8")
    return text.count("\n")


def append_labels(handle: IO[str], records: Sequence[LabelRecord]) -> None:
    """Append one query's records in one write and flush, so an interrupted run leaves at
    most a partial last line (which ``repair_tail`` removes before a resumed run)."""
    handle.write(_lines(records))
    handle.flush()


def repair_tail(path: str | os.PathLike[str]) -> bool:
    """Cut a partial last line left by an interrupted run; True when something was cut."""
    file = Path(path)
    if not file.exists() or file.stat().st_size == 0:
        return False
    with open(file, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return False
        handle.truncate(data.rfind(b"\n") + 1)
        return True


@dataclass(frozen=True)
class LabelledQuery:
    """A query's labelled passages, in file order: what a student trains on."""

    query_id: str
    query: str
    passages: tuple[str, ...]
    labels: tuple[float, ...]


def group_by_query(records: Iterable[LabelRecord]) -> list[LabelledQuery]:
    """Records grouped by query id, in order of first appearance; one id with two texts is
    refused (two files merged with clashing ids)."""
    texts: dict[str, str] = {}
    passages: dict[str, list[str]] = {}
    labels: dict[str, list[float]] = {}
    for record in records:
        known = texts.setdefault(record.query_id, record.query)
        if known != record.query:
            raise UserError(
                f"query id {record.query_id} has two texts: {known[:60]!r} and {record.query[:60]!r}"
            )
        passages.setdefault(record.query_id, []).append(record.passage)
        labels.setdefault(record.query_id, []).append(record.label)
    return [LabelledQuery(qid, texts[qid], tuple(passages[qid]), tuple(labels[qid])) for qid in texts]


def labels_from_golden(golden: Any, *, include_unjudged: bool = True) -> list[LabelRecord]:
    """An eval dataset's qrels as labels (``provenance.source = "qrels"``).

    ``golden`` is a ``GoldenSet`` (``llmrerank.evaluation.datasets``): each query's
    first-stage candidates become pairs labelled with their judged grade; candidates nobody
    judged are 0 (as the metrics count them) unless ``include_unjudged`` is false, when they
    are left out.
    """
    provenance = {"source": "qrels", "dataset": golden.name, "qrels": golden.source}
    records = []
    for query in golden.queries:
        judged = golden.qrels.get(query.qid, {})
        for candidate in query.candidates:
            if candidate.id not in judged and not include_unjudged:
                continue
            records.append(
                LabelRecord(
                    query_id=query.qid,
                    query=query.query,
                    passage_id=candidate.id,
                    passage=candidate.text,
                    label=float(max(0, judged.get(candidate.id, 0))),
                    provenance=provenance,
                )
            )
    if not records:
        raise UserError(f"dataset {golden.name} gives no labelled pairs")
    return records
