"""The agreement report: statistics on hand-made runs, the grade's confidence from logprobs,
and ``llmrerank eval agree`` over real runs of the simulated judge on DL19."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from llmrerank import LLMReranker, UserError
from llmrerank.backends.base import BackendReply, BackendRequest
from llmrerank.cli import main
from llmrerank.evaluation.agreement import (
    agreement,
    compare_agreements,
    moved_passages,
    read_labels_file,
)
from llmrerank.strategies import Pointwise
from llmrerank.testing import FunctionBackend
from llmrerank.types import TokenLogprob, Usage

QRELS = {"q1": {"a": 3, "b": 2, "c": 1, "d": 0}, "q2": {"e": 2, "f": 0, "g": 1}}


def run(
    strategy: str, llm: dict[str, dict[str, float]], **extra: dict[str, dict[str, float]]
) -> dict[str, Any]:
    stage_scores = {
        qid: {"llm": scores, **{k: v[qid] for k, v in extra.items() if qid in v}}
        for qid, scores in llm.items()
    }
    ranks = {qid: {d: -i for i, d in enumerate(sorted(s, key=lambda d: -s[d]))} for qid, s in llm.items()}
    return {
        "dataset": "toy",
        "pipeline": {"name": strategy, "strategy": strategy},
        "rubrics": [{"ref": "kb@1", "sha256": "f" * 64}],
        "stage_scores": stage_scores,
        "run": ranks,
        "metrics": {"ndcg@10": 0.5},
        "per_query": {"ndcg@10": {"q1": 0.5, "q2": 0.5}},
        "cost_usd": 0.0,
        "latency_p50_s": 0.0,
        "calls": 7,
    }


def test_perfect_grades_agree_fully() -> None:
    found = agreement(
        run("pointwise", {q: {d: float(g) for d, g in labels.items()} for q, labels in QRELS.items()}), QRELS
    )
    assert found.kind == "grades"
    assert found.kappa == pytest.approx(1.0)
    assert found.alpha == pytest.approx(1.0)
    assert found.exact == 1.0
    assert found.tau == {"q1": pytest.approx(1.0), "q2": pytest.approx(1.0)}
    assert (found.inverted, found.ordered_pairs, found.disagreements) == (0, 9, ())
    assert found.rubrics == ("kb@1 ffffffff",)


def test_grades_confusion_and_the_largest_disagreements_first() -> None:
    grades = {"q1": {"a": 3.0, "b": 0.0, "c": 3.0, "d": 0.0, "x": 2.0}, "q2": {"e": 1.0, "f": 0.0, "g": 1.0}}
    confidence = {"q1": {"b": 0.9, "c": 0.55}, "q2": {"e": 0.7}}
    found = agreement(run("pointwise", grades, **{"llm:confidence": confidence}), QRELS, top=3)
    assert found.pairs == 7
    assert found.unlabelled == 1
    assert found.grades == (0, 1, 2, 3)
    assert found.confusion == ((2, 0, 0, 0), (0, 1, 0, 1), (1, 1, 0, 0), (0, 0, 0, 1))
    assert found.exact == pytest.approx(4 / 7)
    assert 0 < (found.kappa or 0) < 1
    assert 0 < (found.alpha or 0) < 1
    # |label - grade| = 2 twice (b: 2 -> 0, c: 1 -> 3): the more confident one first, then e (2 -> 1)
    assert [(d.docid, d.label, d.grade, d.confidence) for d in found.disagreements] == [
        ("b", 2, 0.0, 0.9),
        ("c", 1, 3.0, 0.55),
        ("e", 2, 1.0, 0.7),
    ]
    # inverted: c (1) above b (2); tied: a and c at 3, b and d at 0, e and g at 1
    assert (found.inverted, found.llm_ties) == (1, 3)


def test_an_order_run_counts_inverted_pairs_and_who_was_pushed_down() -> None:
    order = {"q1": {"d": 1.0, "a": 0.5, "c": 1 / 3, "b": 0.25}, "q2": {"e": 1.0, "g": 0.5, "f": 1 / 3}}
    found = agreement(run("listwise", order), QRELS)
    assert found.kind == "order"
    assert found.kappa is None
    assert found.confusion == ()
    # q1: d (0) above a, c, b; c (1) above b (2): 4 of 6 pairs inverted; q2 in label order
    assert (found.inverted, found.ordered_pairs) == (4, 9)
    assert found.tau["q2"] == pytest.approx(1.0)
    assert found.tau["q1"] == pytest.approx(-1 / 3)
    assert [(d.docid, d.lower_above, d.llm_rank) for d in found.disagreements] == [
        ("b", 2, 4),
        ("a", 1, 2),
        ("c", 1, 3),
    ]


def test_side_by_side_tests_tau_and_names_the_passages_that_moved() -> None:
    base = run(
        "pointwise", {"q1": {"a": 1.0, "b": 3.0, "c": 0.0, "d": 2.0}, "q2": {"e": 2.0, "f": 0.0, "g": 1.0}}
    )
    better = run(
        "pointwise", {"q1": {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}, "q2": {"e": 2.0, "f": 0.0, "g": 1.0}}
    )
    better["per_query"] = {"ndcg@10": {"q1": 1.0, "q2": 0.5}}
    found = [agreement(r, QRELS) for r in (base, better)]
    (comparison,) = compare_agreements([base, better], found, "ndcg@10")
    assert comparison.metric("kendall_tau").delta > 0
    assert comparison.metric("ndcg@10").wins == 1
    (moved,) = moved_passages(base, better, QRELS, "ndcg@10")
    assert moved.qid == "q1"
    assert moved.delta == pytest.approx(0.5)
    assert moved.moved[0] == ("a", 3, 3, 1, 1.0, 3.0)  # label 3: rank 3 -> 1, grade 1 -> 3


def test_pointwise_keeps_the_answered_grade_and_its_probability() -> None:
    def reply(request: BackendRequest) -> BackendReply:
        top = {"2": 0.6, "3": 0.4} if "alpha" in request.messages[-1]["content"] else {"1": 0.8, "0": 0.2}
        best = max(top, key=lambda k: top[k])
        token = TokenLogprob(best, math.log(top[best]), {k: math.log(v) for k, v in top.items()})
        return BackendReply(
            f'{{"grade": {best}}}', Usage(1, 1), "m", (TokenLogprob('{"grade": ', 0.0), token)
        )

    backend = FunctionBackend(reply, supports_logprobs=True)
    ranking = LLMReranker(backend, strategy=Pointwise(use_logprobs=True)).rerank("q", ["beta", "alpha"])
    top, bottom = ranking
    assert top.text == "alpha"
    assert top.stage_scores == {
        "llm": pytest.approx(2.4),
        "llm:grade": 2.0,
        "llm:confidence": pytest.approx(0.6),
    }
    assert bottom.stage_scores["llm:confidence"] == pytest.approx(0.8)


def test_eval_agree_writes_markdown_and_html_for_grades_and_orders(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "agree",
                "datasets": [{"name": "dl19", "limit": 4, "depth": 12}],
                "metrics": ["ndcg@10"],
                "pipelines": [
                    {
                        "name": "pointwise",
                        "llm": "sim:dl19@1.0",
                        "strategy": "pointwise",
                        "rubric": "web-passages@1",
                    },
                    {
                        "name": "listwise",
                        "llm": "sim:dl19@1.0",
                        "strategy": "listwise",
                        "rubric": "web-passages@1",
                    },
                ],
            }
        )
    )
    runner = CliRunner()
    ran = runner.invoke(main, ["eval", "run", str(config), "--out", str(tmp_path / "runs")])
    assert ran.exit_code == 0, ran.output
    results = [str(tmp_path / "runs" / f"dl19__{name}__r0.json") for name in ("pointwise", "listwise")]
    agreed = runner.invoke(main, ["eval", "agree", *results, "--out", str(tmp_path / "report"), "--top", "4"])
    assert agreed.exit_code == 0, agreed.output
    assert "dl19:pointwise" in agreed.output
    assert "kappa" in agreed.output
    report = (tmp_path / "report" / "agreement.md").read_text()
    assert "## dl19:pointwise" in report
    assert "## dl19:listwise" in report
    assert "Rubric: `web-passages@1 " in report
    assert "weighted Cohen's kappa (quadratic)" in report
    assert "Passages most pushed down" in report
    assert "## Per query: dl19:listwise against the baseline (ndcg@10)" in report
    page = (tmp_path / "report" / "agreement.html").read_text()
    assert page.count("data:image/png") == 1  # one heat-map: the grade run's
    assert "<script" not in page
    no_llm = runner.invoke(
        main, ["eval", "agree", results[0], "--out", str(tmp_path / "r2"), "--dataset", "devkb"]
    )
    assert no_llm.exit_code == 2
    assert "no passage the LLM judged has a label" in no_llm.output


def test_a_labels_file_of_the_distillation_work_reads_as_qrels(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(
        '{"query_id": "q1", "query": "x", "passage_id": "a", "passage": "t", "label": 2.6}\n\n'
        '{"query_id": "q1", "query": "x", "passage_id": "b", "passage": "u", "label": 0}\n'
    )
    assert read_labels_file(path) == {"q1": {"a": 3, "b": 0}}
    path.write_text('{"query_id": "q1"}\n')
    with pytest.raises(UserError, match=r"labels\.jsonl:1: not a labels record"):
        read_labels_file(path)
