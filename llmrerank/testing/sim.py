"""``sim:DATASET[@NOISE]``: the simulated judge behind a local wire-format server, as a
backend, for benchmarks, the eval harness and trying the CLI without any model.

``sim:dl19`` answers perfectly from the TREC DL 2019 qrels; ``sim:dl19@0.1`` errs 10% of
the time. Judge servers are started once per process (by the factory, never by a
constructor) and stop with it. The prefix is registered through the ``llmrerank.backends``
entry point and when ``llmrerank.testing`` is imported.
"""

from __future__ import annotations

import threading
from typing import Any

from ..backends.base import Backend
from ..backends.endpoint import Endpoint
from ..backends.openai import OpenAIBackend
from ..errors import UserError
from ..settings import TREC_FILES, asset
from .batch_server import BatchWireServer
from .judge import SimulatedJudge
from .server import WireServer

__all__ = ["judge_endpoint", "simulated_backend"]

_servers: dict[tuple[str, float, float], WireServer] = {}
_lock = threading.Lock()


def _server(dataset: str, error_rate: float, delay_s: float) -> WireServer:
    key = (dataset, error_rate, delay_s)
    with _lock:
        if key not in _servers:
            if dataset not in TREC_FILES:
                raise UserError(f"sim: knows {sorted(TREC_FILES)}, not {dataset!r}")
            candidates, qrels = (asset(p) for p in TREC_FILES[dataset])
            judge = SimulatedJudge.from_trec(candidates, qrels, error_rate=error_rate)
            _servers[key] = BatchWireServer(judge, delay_s=delay_s).start()
        return _servers[key]


def judge_endpoint(spec: str = "dl19", *, delay_s: float = 0.0) -> tuple[str, Endpoint]:
    """The model name and endpoint of the judge server for ``DATASET[@NOISE]``."""
    dataset, _, noise = spec.partition("@")
    try:
        error_rate = float(noise) if noise else 0.0
    except ValueError:
        raise UserError(f"sim:{spec}: noise must be a number, e.g. sim:dl19@0.1") from None
    dataset = dataset or "dl19"
    server = _server(dataset, error_rate, delay_s)
    judge = f"{dataset}@{error_rate}"
    endpoint = Endpoint(
        provider="sim", base_url=server.openai_base_url, identity={"judge": judge}, owner=server
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
