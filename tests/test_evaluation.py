"""The eval harness on real assets: metric cross-check, loaders, runs, resume, compare, gate, report."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from llmrerank.cli import main
from llmrerank.errors import BudgetError, UserError
from llmrerank.evaluation import (
    compare_results,
    evaluate,
    load_dataset,
    load_experiment,
    load_result,
    parse_gate,
    run_experiment,
    write_report,
)
from llmrerank.evaluation.batch_state import BatchOptions
from llmrerank.evaluation.pipelines import expand_pipelines
from llmrerank.evaluation.ray_executor import RayOptions
from llmrerank.evaluation.records import Checkpoint
from llmrerank.pipeline import PipelineSpec
from llmrerank.prompts import builtin_prompts_dir
from llmrerank.rerankers.protocol import ranking_from_order
from llmrerank.types import CandidateLike, Ranking, as_candidates


@pytest.mark.parametrize(("name", "expected"), [("dl19", 0.5058), ("dl20", 0.4796)])
def test_bm25_order_reproduces_the_published_ndcg(name: str, expected: float) -> None:
    golden = load_dataset(name)
    run = {q.qid: {c.id: float(c.score or 0) for c in q.candidates} for q in golden.queries}
    means, per_query = evaluate(golden.qrels, run, ["ndcg@10"], rel_threshold=golden.rel_threshold)
    assert round(means["ndcg@10"], 4) == expected
    assert len(per_query["ndcg@10"]) == len(golden.queries)


def test_scifact_loads_with_bm25_as_the_first_stage() -> None:
    golden = load_dataset("scifact", limit=5, depth=10)
    assert len(golden.queries) == 5
    assert all(len(q.candidates) == 10 for q in golden.queries)
    scores = [c.score for c in golden.queries[0].candidates]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]


def test_scifact_train_is_its_own_named_set_disjoint_from_the_test_split() -> None:
    train = load_dataset("scifact-train", limit=3, depth=5)
    test_qids = set(load_dataset("scifact", limit=1, depth=1).qrels)
    assert train.name == "scifact-train"
    assert len(train.queries) == 3
    assert len(train.qrels) == 809
    assert not set(train.qrels) & test_qids


def test_the_project_golden_set_is_complete() -> None:
    golden = load_dataset("devkb")
    assert len(golden.queries) == 36
    for query in golden.queries:
        assert query.qid in golden.qrels
        assert set(golden.qrels[query.qid]) == {c.id for c in query.candidates}
        assert max(golden.qrels[query.qid].values()) == 3


def write_config(path: Path, pipelines: Sequence[Mapping[str, object]], **extra: object) -> Path:
    config = {
        "name": "t",
        "datasets": [{"name": "dl19", "limit": 4, "depth": 20}],
        "pipelines": pipelines,
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


class Reverse:
    """A deterministic stand-in pipeline: reverses the first-stage order."""

    uses_llm = False
    name = "reverse"

    def __init__(self) -> None:
        self.calls = 0

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        self.calls += 1
        return ranking_from_order(query, as_candidates(candidates)[::-1], stage=self.name)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        return self.rerank(query, candidates)


def test_runs_resume_after_an_interruption(tmp_path: Path) -> None:
    experiment = load_experiment(write_config(tmp_path / "c.yaml", [{"name": "reverse"}]))
    stand_in = Reverse()

    class Interrupt(Exception):
        pass

    def flaky(spec: PipelineSpec) -> Reverse:
        original = stand_in.rerank

        def rerank(query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
            if stand_in.calls == 2:
                raise Interrupt
            return original(query, candidates, top_k=top_k)

        stand_in.rerank = rerank  # type: ignore[method-assign]
        return stand_in

    with pytest.raises(Interrupt):
        list(run_experiment(experiment, tmp_path / "out", factory=flaky, progress=False))
    assert len((tmp_path / "out" / "dl19__reverse__r0.partial.jsonl").read_text().splitlines()) == 2
    resumed = Reverse()
    (result,) = run_experiment(experiment, tmp_path / "out", factory=lambda spec: resumed, progress=False)
    assert resumed.calls == 2  # only the two unfinished queries
    assert result.data["queries"] == 4
    assert set(result.data["per_query"]["ndcg@10"]) == {q.qid for q in load_dataset("dl19", limit=4).queries}
    saved = load_result(tmp_path / "out" / "dl19__reverse__r0.json")
    assert saved["schema"] == "llmrerank.eval/1"


def test_a_checkpoint_line_is_on_disk_once_appended_and_a_cut_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "dl19__x__r0.partial.jsonl"
    record = {"qid": "q1", "cost_usd": 0.5}
    with Checkpoint(path) as checkpoint:
        checkpoint.append(record)
        assert Checkpoint(path).done == {"q1": record}  # read by another process meanwhile
    path.write_text(path.read_text() + '{"qid": "q2", "cos')  # the run was killed mid-line
    resumed = Checkpoint(path)
    assert resumed.done == {"q1": record}
    assert resumed.beside(".paid.jsonl") == tmp_path / "dl19__x__r0.paid.jsonl"
    resumed.finish()
    assert not path.exists()


def test_batch_and_executor_are_typed_options_once_the_config_loads(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml", [{"name": "bm25"}], batch={"poll_s": 1}, executor={"workers": 3}
    )
    experiment = load_experiment(config)
    assert experiment.batch == BatchOptions(poll_s=1)
    assert experiment.executor == RayOptions(workers=3)
    plain = load_experiment(write_config(tmp_path / "p.yaml", [{"name": "bm25"}], executor="local"))
    assert (plain.batch, plain.executor) == (None, None)
    on_ray = load_experiment(write_config(tmp_path / "r.yaml", [{"name": "bm25"}], executor="ray"))
    assert on_ray.executor == RayOptions()
    with pytest.raises(UserError, match=r"executor: unknown keys \['worker'\]"):
        load_experiment(write_config(tmp_path / "k.yaml", [{"name": "bm25"}], executor={"worker": 3}))
    with pytest.raises(UserError, match="executor: 'local', 'ray'"):
        load_experiment(write_config(tmp_path / "e.yaml", [{"name": "bm25"}], executor="cluster"))


def test_simulated_llm_pipeline_records_calls_prompts_and_cache_hits(tmp_path: Path) -> None:
    pipelines = [{"name": "bm25"}, {"name": "listwise", "llm": "sim:dl19", "strategy": "listwise"}]
    config = write_config(tmp_path / "c.yaml", pipelines, cache_dir=str(tmp_path / "cache"))
    experiment = load_experiment(config)
    first = {
        r.data["pipeline"]["name"]: r.data for r in run_experiment(experiment, tmp_path / "a", progress=False)
    }
    again = {
        r.data["pipeline"]["name"]: r.data for r in run_experiment(experiment, tmp_path / "b", progress=False)
    }
    listwise = first["listwise"]
    assert listwise["calls"] == 4
    assert listwise["prompts"][0]["ref"] == "listwise/rankgpt@2"
    assert listwise["metrics"]["ndcg@10"] > first["bm25"]["metrics"]["ndcg@10"]
    assert again["listwise"]["cache_hits"] == 4
    assert again["listwise"]["prompt_tokens"] == 0


def test_dry_run_and_cost_cap(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", [{"name": "p", "llm": "sim:dl19", "strategy": "pointwise"}])
    result = CliRunner().invoke(main, ["eval", "run", str(config), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "calls ≤      80" in result.output
    experiment = load_experiment(config)
    with pytest.raises(BudgetError, match="max-cost"):
        list(run_experiment(experiment, tmp_path / "o", max_cost_usd=-1.0, progress=False))


def degraded_prompt_dir(tmp_path: Path) -> Path:
    """v2 of the pointwise prompt shows only the first 3 words of each passage: a regression."""
    root = tmp_path / "prompts"
    shutil.copytree(builtin_prompts_dir() / "pointwise", root / "pointwise")
    v1 = (root / "pointwise" / "relevance" / "v1.jinja").read_text()
    degraded = v1.replace(
        "{{ passage.text | passage }}", "{{ passage.text.split()[:3] | join(' ') | passage }}"
    )
    assert degraded != v1
    (root / "pointwise" / "relevance" / "v2.jinja").write_text(degraded)
    return root


def test_regression_gate_fails_a_degraded_prompt_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMRERANK_PROMPTS_PATH", str(degraded_prompt_dir(tmp_path)))
    pipeline = {
        "name": "pointwise",
        "llm": "sim:dl19",
        "strategy": "pointwise",
        "prompt": ["pointwise/relevance@1", "pointwise/relevance@2"],
    }
    experiment = load_experiment(write_config(tmp_path / "c.yaml", [pipeline]))
    results = [r for r in run_experiment(experiment, tmp_path / "out", progress=False)]
    good, bad = (tmp_path / "out" / r.path_name for r in results)
    comparison = compare_results(load_result(good), load_result(bad))
    assert comparison.metric("ndcg@10").delta < -0.1
    assert parse_gate("ndcg@10:0.01").failed(comparison)

    runner = CliRunner()
    gate = runner.invoke(main, ["eval", "compare", str(good), str(bad), "--fail-if-worse", "ndcg@10:0.01"])
    assert gate.exit_code == 1, gate.output
    assert "REGRESSION" in gate.output
    same = runner.invoke(main, ["eval", "compare", str(good), str(good), "--fail-if-worse", "ndcg@10:0.01"])
    assert same.exit_code == 0, same.output

    md, page = write_report([load_result(good), load_result(bad)], tmp_path / "report")
    assert "pointwise[pointwise/relevance@2]" in md.read_text()
    assert page.read_text().count("data:image/png;base64,") == 2
    assert "## Against the baseline, per query (ndcg@10)" in md.read_text()

    # a sweep that scored fewer metrics than the runs still reports what it has
    sweep = [
        {"pipeline": "p", "depth": d, "metrics": {"ndcg@10": 0.5}, "latency_p50_s": 0.1, "calls": d}
        for d in (10, 20)
    ]
    md, page = write_report(
        [load_result(good), load_result(bad)], tmp_path / "swept", metrics=["ndcg@10", "mrr@10"], sweep=sweep
    )
    assert "| p | 20 | 0.5000 | 0.100 | 20 |" in md.read_text()
    assert page.read_text().count("data:image/png;base64,") == 3


def test_pipeline_spec_validates_stage_counts() -> None:
    with pytest.raises(Exception, match="narrow_to values"):
        PipelineSpec("x", narrow_with=("dense:",), narrow_to=(10, 5)).build()
    assert json.dumps(PipelineSpec("x").to_dict())


def test_list_axes_expand_and_a_null_means_the_default() -> None:
    specs = expand_pipelines(
        {
            "name": "p",
            "llm": "sim:dl19",
            "rubric": [None, "evals/rubrics/support-kb.yaml"],
            "max_concurrency": 2,
        }
    )
    assert [(s.name, s.rubric) for s in specs] == [
        ("p[default]", None),
        ("p[support-kb]", "evals/rubrics/support-kb.yaml"),
    ]
    assert {s.max_concurrency for s in specs} == {2}
