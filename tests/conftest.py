from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the offline datasets and models sit beside the repository (the Makefile sets the same)
os.environ.setdefault("LLMRERANK_ASSETS", str(Path(__file__).resolve().parents[2] / "shared" / "assets"))

from llmrerank.backends import Backend, OpenAIBackend
from llmrerank.settings import TREC_FILES, asset
from llmrerank.testing import SimulatedJudge, WireServer


@dataclass(frozen=True)
class TrecQuery:
    qid: str
    query: str
    candidates: list[dict[str, str]]


def load_trec(name: str) -> tuple[list[TrecQuery], dict[str, dict[str, int]]]:
    candidates_path, qrels_path = (asset(p) for p in TREC_FILES[name])
    qrels: dict[str, dict[str, int]] = {}
    for line in Path(qrels_path).read_text().splitlines():
        qid, _, docid, rel = line.split()
        qrels.setdefault(qid, {})[docid] = int(rel)
    queries = []
    for line in Path(candidates_path).read_text().splitlines():
        record = json.loads(line)
        queries.append(
            TrecQuery(
                record["qid"],
                record["query"],
                [{"id": c["docid"], "text": c["text"]} for c in record["candidates"]],
            )
        )
    return queries, qrels


@pytest.fixture(scope="session")
def dl19() -> tuple[list[TrecQuery], dict[str, dict[str, int]]]:
    return load_trec("dl19")


@pytest.fixture(scope="session")
def dl19_judge_server() -> Iterator[WireServer]:
    candidates_path, qrels_path = (asset(p) for p in TREC_FILES["dl19"])
    with WireServer(SimulatedJudge.from_trec(candidates_path, qrels_path)) as server:
        yield server


@pytest.fixture
def judge_backend(dl19_judge_server: WireServer) -> Iterator[Backend]:
    with OpenAIBackend("judge", base_url=dl19_judge_server.openai_base_url) as backend:
        yield backend


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export cache for the session: each offline model is exported once."""
    return tmp_path_factory.mktemp("onnx-exports")
