"""Corrected significance, the regression gate, the HTML report, progress lines and the
bound-based cost cap."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmrerank.cli import main
from llmrerank.errors import BudgetError
from llmrerank.evaluation import load_experiment, run_experiment, write_report
from llmrerank.evaluation.compare import Significance, adjust_pvalues, compare_many
from llmrerank.evaluation.estimate import estimate
from llmrerank.evaluation.progress import Progress

from .test_evaluation import Reverse, write_config


def fake_result(name: str, scores: list[float], calls: int = 0) -> dict[str, Any]:
    return {
        "schema": "llmrerank.eval/1",
        "dataset": "toy",
        "pipeline": {"name": name},
        "per_query": {"ndcg@10": {f"q{i}": s for i, s in enumerate(scores)}},
        "metrics": {"ndcg@10": sum(scores) / len(scores)},
        "cost_usd": 0.0,
        "latency_p50_s": 0.0,
        "latency_p95_s": 0.0,
        "calls": calls,
        "cache_hits": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "degraded_queries": 0,
        "prompts": [],
    }


BASE = fake_result("base", [0.5] * 30)
# better on 20 of 30 queries: p ≈ 0.02 alone, not significant once corrected over 8 runs
WEAK = fake_result("weak", [0.5 + (0.1 if i % 3 else -0.08) for i in range(30)], calls=300)
STRONG = fake_result("strong", [0.5 + (0.3 if i % 10 else -0.05) for i in range(30)], calls=30_000)
SAME = [fake_result(f"same{j}", [0.5] * 30, calls=3) for j in range(6)]


def test_holm_matches_the_step_down_by_hand() -> None:
    assert adjust_pvalues([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues([0.01, 0.04], "bonferroni") == pytest.approx([0.02, 0.08])
    assert adjust_pvalues([0.01, 0.04], "none") == [0.01, 0.04]
    assert adjust_pvalues([0.3]) == [0.3]


def test_a_star_that_only_chance_explains_is_removed_by_the_correction() -> None:
    alone = compare_many(BASE, [WEAK])[0].metric("ndcg@10")
    assert alone.significant
    assert alone.p_adjusted == alone.p_value
    family = compare_many(BASE, [WEAK, STRONG, *SAME])
    weak, strong = family[0].metric("ndcg@10"), family[1].metric("ndcg@10")
    assert weak.p_value == alone.p_value
    assert weak.p_adjusted > 0.05 > weak.p_value
    assert not weak.significant
    assert strong.significant
    uncorrected = compare_many(BASE, [WEAK, STRONG, *SAME], significance=Significance(correction="none"))
    assert uncorrected[0].metric("ndcg@10").significant
    tukey = compare_many(BASE, [WEAK, STRONG, *SAME], significance=Significance(test="tukey"))
    assert all(0.0 <= c.metric("ndcg@10").p_adjusted <= 1.0 for c in tukey)
    assert "Tukey" in tukey[0].significance.describe(8)
    with pytest.raises(Exception, match="correction must be one of"):
        Significance(correction="fdr")


def test_report_names_the_test_and_correction_and_skips_empty_charts(tmp_path: Path) -> None:
    md, page = write_report([BASE, WEAK, STRONG, *SAME], tmp_path / "r", metrics=["ndcg@10"])
    text = md.read_text()
    assert "paired randomisation test, Holm–Bonferroni-corrected over 8 comparisons per metric" in text
    assert "| p (randomisation) | p corrected (holm) |" in text
    weak_row = next(line for line in text.splitlines() if line.startswith("| toy:weak | +"))
    assert "*" not in weak_row
    html = page.read_text()
    assert html.startswith("<!doctype html>")
    assert "Holm–Bonferroni" in html
    assert html.count("data:image/png;base64,") == 2  # quality vs calls, per-query deltas
    assert "<h2>Per-query deltas against the baseline</h2>" in html

    local = [fake_result("bm25", [0.4] * 5), fake_result("dense", [0.6] * 5)]
    _, page = write_report(local, tmp_path / "local", metrics=["ndcg@10"])
    assert "Quality against LLM calls" not in page.read_text()  # every run at 0 calls
    assert page.read_text().count("data:image/png;base64,") == 1


def test_compare_cli_prints_corrected_p_and_gates_on_significance(tmp_path: Path) -> None:
    paths = []
    for result in (BASE, WEAK, STRONG, *SAME):
        path = tmp_path / f"{result['pipeline']['name']}.json"
        path.write_text(json.dumps(result))
        paths.append(str(path))
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(fake_result("worse", [0.5 - (0.1 if i % 3 else -0.08) for i in range(30)])))
    runner = CliRunner()
    out = runner.invoke(main, ["eval", "compare", *paths])
    assert out.exit_code == 0, out.output
    assert "p(adj)" in out.output
    assert "Holm–Bonferroni-corrected over 8 comparisons" in out.output
    gate = ["eval", "compare", paths[0], str(worse), *paths[3:], "--fail-if-worse", "ndcg@10:0.01"]
    tripped = runner.invoke(main, gate)
    assert tripped.exit_code == 1
    assert "corrected p" in tripped.output
    # the drop is not significant once corrected over the family, so this gate lets it pass
    assert runner.invoke(main, [*gate, "--significant-only"]).exit_code == 0
    assert runner.invoke(main, [*gate, "--significant-only", "--correction", "none"]).exit_code == 1


def test_progress_lines_off_a_terminal_carry_calls_cost_and_eta() -> None:
    stream = io.StringIO()
    progress = Progress(2, interval_s=0.0, stream=stream)
    assert progress.lines  # a StringIO is not a terminal
    progress.start_run("dl19 setwise", 2)
    progress.query_done(calls=7, cost_usd=0.5)
    progress.query_done(calls=5, cost_usd=0.25)
    progress.finish_run()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert re.search(
        r"0/2 runs done; dl19 setwise: 1/2 queries; 7 calls; \$0\.5000; elapsed \d+s; ETA", lines[0]
    )
    assert lines[-1].startswith("[eval] 1/2 runs done; finished dl19 setwise: 2/2 queries; 12 calls; $0.7500")
    assert progress.eta_s() is not None
    assert progress.eta_s() >= 0  # type: ignore[operator]
    progress.start_run("dl19 listwise", 1)
    progress.query_done(calls=1, cost_usd=0.0)
    progress.finish_run()
    assert progress.eta_s() == 0.0
    assert stream.getvalue().splitlines()[-1].endswith("ETA 0s")


def test_max_cost_refuses_a_query_whose_bound_would_pass_the_cap(tmp_path: Path) -> None:
    pipeline = {"name": "s", "llm": "openai:gpt-4o-mini", "strategy": "setwise"}
    experiment = load_experiment(write_config(tmp_path / "c.yaml", [pipeline]))
    (row,) = estimate(experiment)
    assert row["calls"] > 0
    assert row["cost_usd"] > 0
    per_query = row["cost_usd"] / 4
    with pytest.raises(BudgetError, match="could cost up to"):
        list(
            run_experiment(
                experiment, tmp_path / "a", factory=lambda _: Reverse(), max_cost_usd=per_query / 10
            )
        )
    finished = list(
        run_experiment(
            experiment, tmp_path / "b", factory=lambda _: Reverse(), max_cost_usd=row["cost_usd"] * 2
        )
    )
    assert len(finished) == 1
