"""``sim:DATASET[@NOISE]``: the simulated judge behind a local wire-format server, as a
backend, for benchmarks, the eval harness and trying the CLI without any model.

``sim:dl19`` answers perfectly from the TREC DL 2019 qrels (``sim:dl20`` and ``sim:scifact``
likewise; SciFact's binary qrels read "relevant" as the top grade, 3, and its judge knows both
splits, train and test). ``sim:dl19@SIGMA`` reads each query–passage pair as its label
(0–3) + SIGMA · N(0, 1), fixed per pair, and derives every answer (grades, permutations,
preferences, best-of-set, first-token logprobs) from that reading: ``sim:dl19@1.0`` is a
judge whose perceived relevance is off by one grade on average. ``sim:dl19@1.0,bias=0.2``
adds a position bias: each decision goes to the passage shown first with probability 0.2.
Judge servers are started once per process (by the factory, never by a constructor) and
stop with it. The prefix is registered through the ``llmrerank.backends`` entry point and
when ``llmrerank.testing`` is imported.
"""

from __future__ import annotations

import threading
from typing import Any

from ..backends.base import Backend
from ..backends.endpoint import Endpoint
from ..backends.openai import OpenAIBackend
from ..errors import UserError
from ..settings import BEIR_SETS, TREC_FILES, asset
from .batch_server import BatchWireServer
from .judge import SimulatedJudge
from .server import WireServer

__all__ = ["judge_endpoint", "parse_spec", "simulated_backend"]

_servers: dict[tuple[str, float, float, float], WireServer] = {}
_lock = threading.Lock()


def _server(dataset: str, sigma: float, bias: float, delay_s: float) -> WireServer:
    key = (dataset, sigma, bias, delay_s)
    with _lock:
        if key not in _servers:
            judge = _judge(dataset, sigma=sigma, position_bias=bias)
            _servers[key] = BatchWireServer(judge, delay_s=delay_s).start()
        return _servers[key]


def _judge(dataset: str, **options: Any) -> SimulatedJudge:
    if dataset in TREC_FILES:
        candidates_path, qrels_path = (asset(p) for p in TREC_FILES[dataset])
        return SimulatedJudge.from_trec(candidates_path, qrels_path, **options)
    if dataset in BEIR_SETS:
        # imported here: the eval harness builds pipelines, whose backends load this module
        from ..evaluation.datasets import beir_passages, beir_queries, read_qrels

        folder = asset(BEIR_SETS[dataset][0])
        # every split's qrels: the judge stands in for an LLM that reads any query
        qrels: dict[str, dict[str, int]] = {}
        for split_file in sorted((folder / "qrels").glob("*.tsv")):
            for qid, judged in read_qrels(split_file).items():
                qrels.setdefault(qid, {}).update(judged)
        return SimulatedJudge.from_judgements(beir_queries(folder), beir_passages(folder), qrels, **options)
    raise UserError(f"sim: knows {sorted([*TREC_FILES, *BEIR_SETS])}, not {dataset!r}")


def parse_spec(spec: str) -> tuple[str, float, float]:
    """``DATASET[@SIGMA][,bias=P]`` → (dataset, sigma, position bias)."""
    dataset, _, noise = spec.partition("@")
    sigma_text, *options = noise.split(",") if noise else [""]
    bias = 0.0
    try:
        sigma = float(sigma_text) if sigma_text else 0.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip() != "bias":
                raise ValueError(option)
            bias = float(value)
    except ValueError:
        raise UserError(
            f"sim:{spec}: expected DATASET[@SIGMA][,bias=P], e.g. sim:dl19@1.0 or sim:dl19@1.0,bias=0.2"
        ) from None
    if sigma < 0 or not 0.0 <= bias <= 1.0:
        raise UserError(f"sim:{spec}: SIGMA must be >= 0 and bias a probability in [0, 1]")
    return dataset or "dl19", sigma, bias


def judge_endpoint(spec: str = "dl19", *, delay_s: float = 0.0) -> tuple[str, Endpoint]:
    """The model name and endpoint of the judge server for ``DATASET[@SIGMA][,bias=P]``."""
    dataset, sigma, bias = parse_spec(spec)
    server = _server(dataset, sigma, bias, delay_s)
    judge = f"{dataset}@{sigma}" + (f",bias={bias}" if bias else "")
    endpoint = Endpoint(
        provider="sim",
        base_url=server.openai_base_url,
        identity={"judge": judge, "noise_model": "latent"},
        owner=server,
    )
    return f"sim-{judge}", endpoint


def simulated_backend(
    spec: str = "dl19", *, base_url: str | None = None, delay_s: float = 0.0, **options: Any
) -> Backend:
    """The ``sim:`` factory."""
    if base_url is not None:
        raise UserError("sim: runs its own judge server; it takes no base_url")
    name, endpoint = judge_endpoint(spec, delay_s=delay_s)
    return OpenAIBackend(name, endpoint=endpoint, **options)
