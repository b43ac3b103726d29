"""The ``llmrerank`` command as users run it: separate processes, JSONL in and out, a shared
cache directory, and the simulated judge behind the local wire-format server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmrerank.demo import run_demo
from llmrerank.prompts import builtin_prompts_dir
from llmrerank.testing import WireServer

from .conftest import TrecQuery

LLMRERANK = str(Path(sys.executable).parent / "llmrerank")


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMRERANK, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def judged(server: WireServer, *args: str) -> list[str]:
    """``llmrerank rerank`` against the simulated judge, plus ``args``."""
    return ["rerank", "--model", "openai:judge", "--base-url", server.openai_base_url, *args]


def jsonl_requests(queries: list[TrecQuery], depth: int) -> str:
    return "".join(json.dumps({"query": q.query, "candidates": q.candidates[:depth]}) + "\n" for q in queries)


def outputs(completed: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines()]


@pytest.fixture
def input_file(tmp_path: Path, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text(jsonl_requests(dl19[0][:2], depth=8))
    return path


def test_second_identical_run_is_served_from_the_cache_with_zero_tokens(
    tmp_path: Path, input_file: Path, dl19_judge_server: WireServer
) -> None:
    args = judged(
        dl19_judge_server, "--input", str(input_file), "--cache-dir", str(tmp_path / "cache"), "--top-k", "5"
    )
    before = len(dl19_judge_server.requests)
    first = outputs(run_cli(*args))
    asked = len(dl19_judge_server.requests) - before
    assert asked == 16
    assert [len(line["ranking"]) for line in first] == [5, 5]
    assert all(not call["cached"] and call["prompt_tokens"] > 0 for line in first for call in line["calls"])
    assert {call["prompt_ref"] for line in first for call in line["calls"]} == {"pointwise/relevance@2"}

    second = outputs(run_cli(*args))
    assert len(dl19_judge_server.requests) - before == asked
    assert all(call["cached"] for line in second for call in line["calls"])
    assert sum(c["prompt_tokens"] + c["completion_tokens"] for line in second for c in line["calls"]) == 0
    assert [line["ranking"] for line in second] == [line["ranking"] for line in first]

    stats = run_cli("cache", "stats", "--cache-dir", str(tmp_path / "cache"))
    assert stats.returncode == 0, stats.stderr
    assert "16" in stats.stdout


def test_a_changed_prompt_version_misses_the_cache(
    tmp_path: Path, input_file: Path, dl19_judge_server: WireServer
) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(builtin_prompts_dir() / "pointwise", prompts / "pointwise")
    v1 = (prompts / "pointwise" / "relevance" / "v1.jinja").read_text()
    v2 = v1.replace("You are a careful relevance assessor", "You are a meticulous relevance assessor")
    assert v2 != v1
    (prompts / "pointwise" / "relevance" / "v2.jinja").write_text(v2)
    env = {"LLMRERANK_PROMPTS_PATH": str(prompts)}
    args = judged(dl19_judge_server, "--input", str(input_file), "--cache-dir", str(tmp_path / "cache"))
    outputs(run_cli(*args, "--prompt", "pointwise/relevance@1", env=env))
    changed = outputs(run_cli(*args, "--prompt", "pointwise/relevance@2", env=env))
    calls = [call for line in changed for call in line["calls"]]
    assert {call["prompt_ref"] for call in calls} == {"pointwise/relevance@2"}
    assert not any(call["cached"] for call in calls)
    again = outputs(run_cli(*args, "--prompt", "pointwise/relevance@1", env=env))
    assert all(call["cached"] for line in again for call in line["calls"])


@pytest.mark.parametrize("strategy", ["listwise", "pairwise", "setwise"])
def test_every_strategy_runs_from_the_cli(
    strategy: str, input_file: Path, dl19_judge_server: WireServer
) -> None:
    args = judged(dl19_judge_server, "--strategy", strategy, "--no-cache", "--input", str(input_file))
    lines = outputs(run_cli(*args))
    assert [len(line["ranking"]) for line in lines] == [8, 8]
    assert all(line["calls"] for line in lines)


def test_the_cascade_from_the_cli_narrows_with_dense_then_the_cross_encoder(
    input_file: Path, dl19_judge_server: WireServer, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    lines = outputs(
        run_cli(
            *judged(dl19_judge_server),
            "--strategy",
            "listwise",
            "--narrow-with",
            "dense:",
            "--cross-encoder",
            "",
            "--narrow-to",
            "6",
            "--narrow-to",
            "4",
            "--top-k",
            "3",
            "--no-cache",
            "--trace",
            str(trace),
            "--input",
            str(input_file),
        )
    )
    assert [[stage["kept"] for stage in line["stages"]] for line in lines] == [[6, 4, 3], [6, 4, 3]]
    assert [len(line["ranking"]) for line in lines] == [3, 3]
    assert len(trace.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("not json\n", "input line 1 is not JSON"),
        ('{"query": "q"}\n', "input line 1 needs 'query' and 'candidates'"),
        ('{"query": "q", "candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}\n', "line 1"),
        ('{"query": "q", "candidates": [{"id": "a", "text": ""}]}\n', "line 1"),
        (
            '{"query": "q", "candidates": ' + "[" * 1100 + "]" * 1100 + "}\n",
            "input line 1 is nested too deeply",
        ),
    ],
    ids=["not-json", "missing-field", "duplicate-id", "empty-text", "nested-too-deeply"],
)
def test_bad_input_is_one_line_on_stderr_and_a_non_zero_exit(
    stdin: str, message: str, dl19_judge_server: WireServer
) -> None:
    completed = run_cli(*judged(dl19_judge_server), stdin=stdin)
    assert completed.returncode != 0
    assert message in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    assert "Traceback" not in completed.stderr


def test_the_demo_prints_every_stage_it_ran(tmp_path: Path) -> None:
    lines: list[str] = []
    table = run_demo(
        dataset="dl19", queries=2, model="sim:dl19", cache_dir=str(tmp_path / "cache"), echo=lines.append
    )
    assert [row["stage"].split()[0] for row in table] == ["BM25", "dense", "cross-encoder", "cascade:"]
    _, dense, cross_encoder, _ = table
    assert dense["ndcg@10"] > cross_encoder["ndcg@10"]  # measured on these queries, so dense narrows
    assert table[-1]["stage"].startswith("cascade: dense")
    assert any("narrowing with dense" in line for line in lines)
    cascade = table[-1]
    assert cascade["calls"] == 2  # one listwise window of 20 a query
    assert cascade["degraded"] == 0
    assert cascade["ndcg@10"] > table[0]["ndcg@10"]  # a perfect judge on top of dense lifts BM25
    assert any(line.startswith("cascade:") for line in lines)
