"""``sim:DATASET[@NOISE]``: the simulated judge behind a local wire-format server, as a
backend, for benchmarks, the eval harness and trying the CLI without any model.

``sim:dl19`` answers perfectly from the TREC DL 2019 qrels; ``sim:dl19@0.1`` errs 10% of
the time. Servers are started once per process and stop with it.
"""

from __future__ import annotations

import threading

from .._assets import TREC_FILES, asset
from ..backends.openai import OpenAIBackend
from ..errors import UserError
from .judge import SimulatedJudge
from .server import WireServer

__all__ = ["SimulatedBackend"]

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
            _servers[key] = WireServer(judge, delay_s=delay_s).start()
        return _servers[key]


class SimulatedBackend(OpenAIBackend):
    def __init__(self, spec: str = "dl19", *, delay_s: float = 0.0, timeout_s: float = 60.0) -> None:
        dataset, _, noise = spec.partition("@")
        try:
            error_rate = float(noise) if noise else 0.0
        except ValueError:
            raise UserError(f"sim:{spec}: noise must be a number, e.g. sim:dl19@0.1") from None
        server = _server(dataset or "dl19", error_rate, delay_s)
        self.judge_spec = f"{dataset or 'dl19'}@{error_rate}"
        super().__init__(f"sim-{self.judge_spec}", base_url=server.openai_base_url, timeout_s=timeout_s)
        self.provider = "sim"

    def identity(self) -> dict[str, object]:
        return {"provider": "sim", "judge": self.judge_spec}
