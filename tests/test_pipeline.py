"""One ``PipelineSpec``: the same ranking from Python, ``hybrid()``, the CLI, the demo and
the eval harness, and one documented rule for ``top_k`` and each stage's ``keep``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmrerank import PipelineSpec, UserError, hybrid
from llmrerank.demo import run_demo
from llmrerank.evaluation import evaluate, load_dataset, load_experiment, run_experiment
from llmrerank.rerankers.protocol import FirstStage, ranking_from_scores
from llmrerank.types import CandidateLike, Ranking, as_candidates

from .conftest import TrecQuery
from .test_cli import jsonl_requests, outputs, run_cli

SPEC: dict[str, Any] = {
    "name": "same",
    "narrow_with": ["cross-encoder:"],
    "narrow_to": [20],
    "llm": "sim:dl19",
    "strategy": "listwise",
}


def test_one_spec_gives_one_ranking_through_every_entry_point(
    tmp_path: Path, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    queries = dl19[0][:2]
    built = PipelineSpec.from_dict(SPEC).build()
    expected = [built.rerank(q.query, q.candidates).ids() for q in queries]
    assert all(len(ids) == 100 for ids in expected)

    sugar = hybrid("sim:dl19", strategy="listwise", narrow_with="cross-encoder:", narrow_to=20, top_k=None)
    assert [sugar.rerank(q.query, q.candidates).ids() for q in queries] == expected

    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    stdin = jsonl_requests(queries, depth=100)
    from_file = outputs(run_cli("rerank", "--pipeline", str(spec_file), "--no-cache", stdin=stdin))
    flags = ["--narrow-with", "cross-encoder:", "--narrow-to", "20", "--model", "sim:dl19", "-s", "listwise"]
    from_flags = outputs(run_cli("rerank", *flags, "--no-cache", stdin=stdin))
    for records in (from_file, from_flags):
        assert [[item["id"] for item in r["ranking"]] for r in records] == expected

    # the eval harness and the demo score what they ran: the same rankings give the same nDCG@10
    golden = load_dataset("dl19", limit=2)
    run = {
        q.qid: {doc: float(100 - i) for i, doc in enumerate(ids)}
        for q, ids in zip(golden.queries, expected, strict=True)
    }
    means, per_query = evaluate(golden.qrels, run, ["ndcg@10"], rel_threshold=golden.rel_threshold)
    config = tmp_path / "experiment.yaml"
    config.write_text(
        yaml.safe_dump({"name": "same", "datasets": [{"name": "dl19", "limit": 2}], "pipelines": [SPEC]})
    )
    (result,) = run_experiment(load_experiment(config), tmp_path / "results", progress=False)
    assert result.data["per_query"]["ndcg@10"] == pytest.approx(per_query["ndcg@10"])
    table = run_demo(
        dataset="dl19",
        queries=2,
        model="sim:dl19",
        strategy="listwise",
        narrow_with="cross-encoder:",
        narrow_to=20,
        cache_dir=str(tmp_path / "demo-cache"),
        echo=lambda line: None,
    )
    assert table[-1]["ndcg@10"] == pytest.approx(means["ndcg@10"])


class ByNumber:
    """Orders passages ``d0..dN`` by their number; records what it was asked."""

    uses_llm = False

    def __init__(self, name: str, *, llm: bool = False) -> None:
        self.name = name
        self.uses_llm = llm
        self.asked: list[tuple[int, int | None]] = []

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        items = as_candidates(candidates)
        self.asked.append((len(items), top_k))
        ranking = ranking_from_scores(query, items, [float(c.id[1:]) for c in items], stage=self.name)
        return ranking.trimmed(top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        return self.rerank(query, candidates, top_k=top_k)


PASSAGES = [{"id": f"d{i}", "text": f"passage {i}"} for i in range(50)]


def test_keep_and_top_k_follow_one_rule() -> None:
    dense, cross, llm = ByNumber("dense"), ByNumber("cross"), ByNumber("llm", llm=True)
    spec = PipelineSpec(narrow_with=(dense, cross), narrow_to=(30, 10), llm=llm, top_k=3)
    ranking = spec.build().rerank("q", PASSAGES)
    # local stages order all they get; the LLM is asked for top_k; the result is trimmed to it
    assert dense.asked == [(50, None)]
    assert cross.asked == [(30, None)]
    assert llm.asked == [(10, 3)]
    assert ranking.ids() == ["d49", "d48", "d47"]
    assert [s.kept for s in ranking.stages] == [30, 10, 3]
    full = spec.with_changes(top_k=None).build().rerank("q", PASSAGES)
    assert sorted(full.ids()) == sorted(p["id"] for p in PASSAGES)


def test_counts_default_to_twenty_and_broadcast_one_value() -> None:
    a, b = ByNumber("a"), ByNumber("b")
    assert PipelineSpec(narrow_with=(a, b), llm=ByNumber("llm", llm=True)).keeps() == (20, 20)
    assert PipelineSpec(narrow_with=(a, b), narrow_to=(7,), llm="sim:dl19").keeps() == (7, 7)
    # with no LLM after it, the last stage is the last stage: it keeps top_k (all by default)
    assert PipelineSpec(narrow_with=(a,)).keeps() == (None,)
    assert PipelineSpec(narrow_with=(a, b), top_k=5).keeps() == (20, 5)
    with pytest.raises(UserError, match="narrow_to"):
        PipelineSpec(narrow_with=(a, b), narrow_to=(5, 4, 3)).keeps()
    with pytest.raises(UserError, match="positive"):
        PipelineSpec(narrow_with=(a,), narrow_to=(0,)).keeps()


def test_a_spec_with_no_stage_keeps_the_first_stage_order() -> None:
    assert isinstance(PipelineSpec().build(), FirstStage)


def test_specs_load_from_yaml_and_refuse_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('name: kb\nnarrow_with: "dense:"\nnarrow_to: 30\nllm: "sim:dl19"\nstrategy: setwise\n')
    spec = PipelineSpec.from_yaml(path)
    assert (spec.narrow_with, spec.narrow_to, spec.strategy) == (("dense:",), (30,), "setwise")
    assert json.loads(json.dumps(spec.to_dict()))["narrow_to"] == [30]
    with pytest.raises(UserError, match="unknown keys"):
        PipelineSpec.from_dict({"name": "x", "narow_with": ["dense:"]})
    with pytest.raises(UserError, match="unknown stage"):
        PipelineSpec(narrow_with=("bm25:",)).build()
    with pytest.raises(UserError, match="stage 'dense:\\?colour=blue'"):
        PipelineSpec(narrow_with=("dense:?colour=blue",)).build()
