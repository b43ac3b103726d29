"""Golden sets: queries, their first-stage candidates (with text and scores) and graded qrels.

Formats: the JSONL candidates format (``{"qid", "query", "candidates": [{"docid"|"id",
"text", "bm25_score"|"score"}]}``) with TREC qrels; BEIR folders (corpus.jsonl,
queries.jsonl, qrels/SPLIT.tsv) with BM25 (bm25s) as the first stage; TREC runs with a text
source. Named sets: ``dl19``, ``dl20``, ``scifact`` (its test split), ``scifact-train`` (from the
offline assets) and every folder under ``evals/datasets/`` (or ``LLMRERANK_DATASETS``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError
from ..settings import BEIR_SETS, TREC_FILES, asset, dataset_dirs
from ..types import Candidate

__all__ = [
    "EvalQuery",
    "GoldenSet",
    "beir_passages",
    "beir_queries",
    "load_beir",
    "load_candidates_jsonl",
    "load_dataset",
    "load_trec_run",
    "read_qrels",
]


@dataclass(frozen=True)
class EvalQuery:
    qid: str
    query: str
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class GoldenSet:
    """``rel_threshold``: the lowest grade that counts as relevant for binary metrics
    (MAP, recall, MRR, precision); TREC DL uses 2, as ``trec_eval -l 2`` does."""

    name: str
    queries: tuple[EvalQuery, ...]
    qrels: Mapping[str, Mapping[str, int]]
    rel_threshold: int = 1
    source: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)

    def limited(self, limit: int | None = None, depth: int | None = None) -> GoldenSet:
        queries = self.queries[:limit] if limit else self.queries
        if depth:
            queries = tuple(replace(q, candidates=q.candidates[:depth]) for q in queries)
        return replace(self, queries=tuple(queries))


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC (``qid 0 docid rel``) or BEIR TSV (``query-id corpus-id score`` with header)."""
    qrels: dict[str, dict[str, int]] = {}
    for line_number, line in enumerate(Path(path).read_text("utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or (line_number == 1 and parts[0] == "query-id"):
            continue
        if len(parts) == 4:
            qid, _, docid, rel = parts
        elif len(parts) == 3:
            qid, docid, rel = parts
        else:
            raise UserError(f"{path}:{line_number}: not a qrels line: {line!r}")
        qrels.setdefault(qid, {})[docid] = int(rel)
    return qrels


def load_candidates_jsonl(
    path: str | Path, qrels_path: str | Path, *, name: str | None = None, rel_threshold: int = 1
) -> GoldenSet:
    queries = []
    for line_number, line in enumerate(Path(path).read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            candidates = tuple(
                Candidate(
                    id=str(c.get("docid", c.get("id"))),
                    text=c["text"],
                    score=c.get("bm25_score", c.get("score")),
                )
                for c in record["candidates"]
            )
            queries.append(EvalQuery(str(record["qid"]), record["query"], candidates))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}:{line_number}: not a candidates record ({exc})") from exc
    return GoldenSet(
        name=name or Path(path).parent.name,
        queries=tuple(queries),
        qrels=read_qrels(qrels_path),
        rel_threshold=rel_threshold,
        source=str(path),
    )


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def beir_passages(folder: str | Path) -> dict[str, str]:
    """Doc id → passage text (``title text``) of a BEIR folder's corpus, as ``load_beir`` shows it."""
    return {
        str(doc["_id"]): f"{doc.get('title', '')} {doc['text']}".strip()
        for doc in _read_jsonl(Path(folder) / "corpus.jsonl")
    }


def beir_queries(folder: str | Path) -> dict[str, str]:
    """Query id → query text of a BEIR folder."""
    return {str(q["_id"]): str(q["text"]) for q in _read_jsonl(Path(folder) / "queries.jsonl")}


def load_beir(
    folder: str | Path, *, split: str = "test", depth: int = 100, name: str | None = None
) -> GoldenSet:
    """A BEIR folder, first stage BM25 over the whole corpus (bm25s)."""
    import bm25s

    root = Path(folder)
    passages = beir_passages(root)
    ids, texts = list(passages), list(passages.values())
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    queries = beir_queries(root)
    wanted = [qid for qid in qrels if qid in queries]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    results, scores = retriever.retrieve(
        bm25s.tokenize([queries[q] for q in wanted], stopwords="en", show_progress=False),
        k=min(depth, len(texts)),
        show_progress=False,
    )
    eval_queries = []
    for row, qid in enumerate(wanted):
        candidates = tuple(
            Candidate(id=ids[int(doc)], text=texts[int(doc)], score=float(score))
            for doc, score in zip(results[row], scores[row], strict=True)
        )
        eval_queries.append(EvalQuery(qid, queries[qid], candidates))
    return GoldenSet(name or root.name, tuple(eval_queries), qrels, source=str(root))


def load_trec_run(
    run_path: str | Path,
    qrels_path: str | Path,
    *,
    queries: Mapping[str, str],
    texts: Mapping[str, str],
    name: str = "run",
    rel_threshold: int = 1,
) -> GoldenSet:
    """A TREC run (``qid Q0 docid rank score tag``) with query and passage texts."""
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    for line in Path(run_path).read_text("utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 5:
            ranked.setdefault(parts[0], []).append((int(parts[3]), parts[2], float(parts[4])))
    missing = {docid for rows in ranked.values() for _, docid, _ in rows if docid not in texts}
    if missing:
        raise UserError(f"{len(missing)} run documents have no text, e.g. {sorted(missing)[:3]}")
    eval_queries = tuple(
        EvalQuery(
            qid,
            queries[qid],
            tuple(Candidate(id=d, text=texts[d], score=s) for _, d, s in sorted(rows)),
        )
        for qid, rows in ranked.items()
    )
    return GoldenSet(name, eval_queries, read_qrels(qrels_path), rel_threshold, source=str(run_path))


def _read_tsv_pairs(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as handle:
        return {row[0]: row[1] for row in csv.reader(handle, delimiter="\t") if len(row) >= 2}


def load_dataset(spec: str, *, limit: int | None = None, depth: int | None = None) -> GoldenSet:
    """``dl19``, ``dl20``, ``scifact``, ``scifact-train``, a folder under ``evals/datasets/``, or a
    folder path holding ``candidates.jsonl`` and ``qrels.txt``."""
    if spec in TREC_FILES:
        candidates, qrels = (asset(p) for p in TREC_FILES[spec])
        golden = load_candidates_jsonl(candidates, qrels, name=spec, rel_threshold=2)
    elif spec in BEIR_SETS:
        folder_name, split = BEIR_SETS[spec]
        golden = load_beir(asset(folder_name), split=split, depth=depth or 100, name=spec)
    else:
        named = [d / spec for d in dataset_dirs() if (d / spec).is_dir()]
        folder = named[0] if named else Path(spec)
        if not (folder / "candidates.jsonl").is_file():
            known = sorted({p.name for d in dataset_dirs() if d.is_dir() for p in d.iterdir() if p.is_dir()})
            named_sets = ", ".join([*TREC_FILES, *BEIR_SETS])
            raise UserError(f"unknown dataset {spec!r}; use {named_sets}, {known} or a folder")
        meta_path = folder / "dataset.json"
        meta = json.loads(meta_path.read_text("utf-8")) if meta_path.exists() else {}
        golden = load_candidates_jsonl(
            folder / "candidates.jsonl",
            folder / "qrels.txt",
            name=folder.name,
            rel_threshold=int(meta.get("rel_threshold", 1)),
        )
    return golden.limited(limit, depth)
