"""Cold start of the local stages: with their ONNX export cached, real ``llmrerank``
processes rank without importing torch, transformers, sentence-transformers or onnx, for a
model folder and for a hub name resolved through huggingface_hub's cache; and a local-only
pipeline does not import the LLM stack (backends, prompts, strategies, the eval harness)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmrerank import DiskCache
from llmrerank.rerankers.cross_encoder import CrossEncoderReranker
from llmrerank.rerankers.dense import DenseReranker

from .conftest import TrecQuery

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sentence_transformers", "onnx")
# what only an LLM stage (or the eval harness) needs: a local-stage run must not load it
LLM_STACK = (
    "llmrerank.backends",
    "llmrerank.driver",
    "llmrerank.strategies",
    "llmrerank.prompts",
    "llmrerank.pricing",
    "llmrerank.evaluation",
    "httpx2",
    "jinja2",
    "pydantic",
)
# the console script's two lines, plus a report of the heavy modules imported when it exits
CLI = (
    "import atexit, json, sys\n"
    f"atexit.register(lambda: print('HEAVY=' + json.dumps([m for m in {HEAVY!r} if m in sys.modules]),"
    " file=sys.stderr))\n"
    f"atexit.register(lambda: print('LLM_STACK=' + json.dumps([m for m in {LLM_STACK!r}"
    " if m in sys.modules]), file=sys.stderr))\n"
    "from llmrerank.cli import main\n"
    "main()\n"
)
HUB_NAME = "llmrerank-test/minilm-dense"

DL19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]


def run(args: list[str], export_dir: Path, **env: str) -> tuple[str, list[str]]:
    """A real process with this checkout first on its path; its stdout and heavy imports."""
    stdout, imported, _ = run_reporting(args, export_dir, **env)
    return stdout, imported


def run_reporting(args: list[str], export_dir: Path, **env: str) -> tuple[str, list[str], list[str]]:
    """``run``, also with the modules of the LLM stack the process imported."""
    done = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LLMRERANK_ONNX_CACHE": str(export_dir),
            "HF_HUB_OFFLINE": "1",
            **env,
        },
    )
    assert done.returncode == 0, done.stderr
    reports = dict(
        line.split("=", 1) for line in done.stderr.splitlines() if line.startswith(("HEAVY=", "LLM_STACK="))
    )
    return done.stdout, json.loads(reports["HEAVY"]), json.loads(reports["LLM_STACK"])


@pytest.fixture(scope="module")
def warm(export_dir: Path) -> tuple[DenseReranker, CrossEncoderReranker]:
    """Both offline models exported into ``export_dir`` (in this process, which may import torch)."""
    dense = DenseReranker(device="cpu", backend="onnx", onnx_cache_dir=export_dir)
    cross_encoder = CrossEncoderReranker(device="cpu", backend="onnx", onnx_cache_dir=export_dir)
    dense.load()
    cross_encoder.load()
    return dense, cross_encoder


def request(dl19: DL19, tmp_path: Path, count: int = 20) -> tuple[Path, str, list[dict[str, str]]]:
    query = dl19[0][3]
    candidates = query.candidates[:count]
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"query": query.query, "candidates": candidates}) + "\n")
    return path, query.query, candidates


def stage_scores(output: str, stage: str) -> dict[str, float]:
    ranking: dict[str, Any] = json.loads(output)
    return {
        item["id"]: item["stage_scores"][stage]
        for item in ranking["ranking"]
        if stage in item["stage_scores"]
    }


def test_startup_imports_nothing_heavy(export_dir: Path) -> None:
    _, imported = run(["--help"], export_dir)
    assert imported == []


def test_warm_onnx_rerank_imports_no_torch(
    dl19: DL19, export_dir: Path, warm: tuple[DenseReranker, CrossEncoderReranker], tmp_path: Path
) -> None:
    path, query, candidates = request(dl19, tmp_path)
    texts = [c["text"] for c in candidates]
    ids = [c["id"] for c in candidates]
    cache = DiskCache(tmp_path / "cache")
    indexer = DenseReranker(device="cpu", backend="onnx", onnx_cache_dir=export_dir, cache=cache)
    indexer.embed_passages(texts)  # the passages' embeddings are cached: only the query is encoded
    dense, cross_encoder = warm
    # backend=onnx: auto may pick torch where the host timing finds it faster
    onnx = "?backend=onnx"
    stages = ["--narrow-with", f"dense:{onnx}", "--narrow-with", f"cross-encoder:{onnx}", "--narrow-to", "10"]
    output, imported, llm_stack = run_reporting(
        ["rerank", *stages, "--cache-dir", str(tmp_path / "cache"), "-i", str(path)],
        export_dir,
    )
    assert imported == []
    assert llm_stack == []  # a local-only pipeline loads no backend, prompt, HTTP client or eval code
    by_dense = stage_scores(output, "dense")
    assert by_dense == pytest.approx(dict(zip(ids, dense.score(query, texts), strict=True)), abs=1e-5)
    by_cross_encoder = stage_scores(output, "cross-encoder")
    survivors = sorted(by_dense, key=by_dense.__getitem__, reverse=True)[:10]
    assert sorted(by_cross_encoder) == sorted(survivors)
    expected = cross_encoder.score(query, [texts[ids.index(i)] for i in survivors])
    assert by_cross_encoder == pytest.approx(dict(zip(survivors, expected, strict=True)), abs=1e-5)
    ranked = [item["id"] for item in json.loads(output)["ranking"]]
    assert ranked[:10] == sorted(survivors, key=by_cross_encoder.__getitem__, reverse=True)


def test_a_hub_name_loads_from_the_hub_cache_without_torch(
    dl19: DL19, export_dir: Path, warm: tuple[DenseReranker, CrossEncoderReranker], tmp_path: Path
) -> None:
    """The hub's cache layout (refs/main names the snapshot); same bytes as the offline
    folder, so the same content hash and the export made from that folder."""
    source = Path(warm[0].model_name)
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models--{HUB_NAME.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for file in source.rglob("*"):
        if file.is_file():
            (snapshot / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / file.relative_to(source)).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    path, query, candidates = request(dl19, tmp_path, count=8)
    output, imported = run(
        ["rerank", "--narrow-with", f"dense:{HUB_NAME}?backend=onnx", "--no-cache", "-i", str(path)],
        export_dir,
        HF_HUB_CACHE=str(tmp_path / "hub"),
    )
    assert imported == []
    expected = warm[0].score(query, [c["text"] for c in candidates])
    assert stage_scores(output, "dense") == pytest.approx(
        dict(zip([c["id"] for c in candidates], expected, strict=True)), abs=1e-5
    )
