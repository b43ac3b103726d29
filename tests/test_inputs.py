"""Bad input reaches the caller as one ``CandidateError`` naming what is wrong, never as a
crash deeper down (cache-key hashing, prompt rendering, the wire)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from llmrerank import CandidateError
from llmrerank.cli.rerank import spec_from_flags
from llmrerank.rerankers.llm import LLMReranker
from llmrerank.testing import FunctionBackend, WireServer
from llmrerank.testing.server import Reply, WireRequest

from .test_cli import run_cli


def grade_two(request: object) -> str:
    return '{"grade": 2}'


@pytest.mark.parametrize(
    ("query", "candidates", "message"),
    [
        ("ok query", [{"id": "d1", "text": "fine"}, {"id": "d2", "text": "bad \ud800"}], "candidate 'd2'"),
        ("bad \ud800 query", [{"id": "d1", "text": "fine"}], "query is not valid Unicode"),
        ("ok query", {"d1": "fine", "d2": "also fine"}, "must be a list"),
        ("ok query", [{"id": None, "text": "fine"}], "id must be a string or a number"),
    ],
)
def test_bad_input_without_a_cache_is_a_candidate_error_and_sends_nothing(
    query: str, candidates: object, message: str
) -> None:
    backend = FunctionBackend(grade_two)
    reranker = LLMReranker(backend, cache=None)
    with pytest.raises(CandidateError, match=message):
        reranker.rerank(query, candidates)  # type: ignore[arg-type]
    assert backend.requests == []


def test_numeric_ids_come_back_as_strings() -> None:
    reranker = LLMReranker(FunctionBackend(grade_two), cache=None)
    ranking = reranker.rerank("q", [{"id": 3, "text": "a"}, {"id": 4, "text": "b"}])
    assert ranking.ids() == ["3", "4"]


# -- the CLI, as users run it ---------------------------------------------------------
GOOD = b'{"query": "what is a cat", "candidates": [{"id": "a", "text": "cats"}, {"id": "b", "text": "no"}]}\n'


def run_rerank(tmp_path: Path, data: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    return run_cli("rerank", "--model", "sim:dl19", "--no-cache", "--input", str(path), *args)


def test_invalid_utf8_names_its_line_and_earlier_lines_are_written(tmp_path: Path) -> None:
    data = GOOD + b'{"query": "caf\xe9", "candidates": ["x"]}\n' + GOOD
    failed = run_rerank(tmp_path, data)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == ["error: input line 2 is not valid UTF-8 (byte 14)"]
    assert [json.loads(line)["query"] for line in failed.stdout.splitlines()] == ["what is a cat"]

    skipped = run_rerank(tmp_path, data, "--on-error", "skip")
    assert skipped.returncode == 0, skipped.stderr
    lines = [json.loads(line) for line in skipped.stdout.splitlines()]
    assert [line.get("query") for line in lines] == ["what is a cat", None, "what is a cat"]
    assert lines[1] == {"line": 2, "error": "input line 2 is not valid UTF-8 (byte 14)", "type": "UserError"}
    assert "1 input line(s) failed" in skipped.stderr


@pytest.mark.parametrize(
    ("bad_line", "error_type", "message"),
    [
        (
            b'{"query": "q", "candidates": [{"id": "d9", "text": "x \\ud800"}]}',
            "CandidateError",
            "candidate 'd9'",
        ),
        (b'{"query": "\\udc00 q", "candidates": ["x"]}', "CandidateError", "query is not valid Unicode"),
        (b'{"query": "q", "candidates": {"a": "x"}}', "CandidateError", "must be a list"),
        (b'{"query": "q", "candidates": [{"id": null, "text": "x"}]}', "CandidateError", "id must be"),
        (b'{"query": 5, "candidates": ["x"]}', "CandidateError", "query must be a non-empty string"),
        (b"[" * 100_000, "UserError", "input line 2"),
        (b'"just a string"', "UserError", "needs 'query' and 'candidates'"),
    ],
)
def test_each_bad_line_is_one_error_record_and_never_a_traceback(
    tmp_path: Path, bad_line: bytes, error_type: str, message: str
) -> None:
    result = run_rerank(tmp_path, GOOD + bad_line + b"\n" + GOOD, "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    assert "ranking" in lines[0]
    assert "ranking" in lines[2]
    assert lines[1]["line"] == 2
    assert lines[1]["type"] == error_type
    assert message in lines[1]["error"]


def test_call_timeout_and_retries_reach_the_pipeline_spec() -> None:
    spec = spec_from_flags(model="openai:m", call_timeout_s=5.0, attempts=1)
    assert spec.call_timeout_s == 5.0
    assert spec.retry is not None
    assert spec.retry.max_attempts == 1
    defaults = spec_from_flags(model="openai:m")
    assert defaults.call_timeout_s == 60.0
    assert defaults.retry is not None
    assert defaults.retry.max_attempts == 3
    assert spec_from_flags(model="local:").call_timeout_s is None  # the local backend's own 120 s


def test_call_timeout_and_retries_bound_a_hanging_server(tmp_path: Path) -> None:
    def hang(request: WireRequest) -> Reply:
        time.sleep(3)
        return Reply('{"grade": 1}')

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"query": "q", "candidates": [{"id": "a", "text": "one passage, one call"}]}\n')
    with WireServer(hang) as server:
        result = run_cli(
            "rerank", "--model", "openai:m", "--base-url", server.openai_base_url, "--no-cache",
            "--input", str(path), "--call-timeout", "0.3", "--retries", "2",
        )  # fmt: skip
        asked = len(server.requests)
    # the LLM stage falls back to the input order and says why; its one call was tried twice
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["degraded"]
    assert "timed out" in line["degraded_reason"]
    assert asked == 2
