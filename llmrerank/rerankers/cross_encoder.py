"""A local cross-encoder stage (sentence-transformers ``CrossEncoder``).

Scores are raw logits (``stage_scores[name]``) plus a sigmoid-normalised 0–1 score
(``stage_scores[name + ":prob"]``) for thresholds. Pairs longer than ``max_length`` tokens
are truncated by the model, silently in plain sentence-transformers; here they are counted
in ``Ranking.truncated``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..settings import assets_dir
from ..types import Candidate, CandidateLike, Ranking, as_request
from ._sentence_transformers import DEFAULT_MAX_BATCH_TOKENS, TIMING_TEXT, EncoderStage
from .onnx_backend import TextInput
from .protocol import ranking_from_scores

__all__ = ["CrossEncoderReranker", "default_cross_encoder"]

logger = logging.getLogger("llmrerank")

HUB_DEFAULT = "cross-encoder/ms-marco-MiniLM-L6-v2"


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    z = math.exp(x)
    return z / (1 + z)


def default_cross_encoder() -> str:
    """``LLMRERANK_CROSS_ENCODER``, else the offline model in the assets, else the hub name."""
    configured = os.environ.get("LLMRERANK_CROSS_ENCODER")
    if configured:
        return configured
    assets = assets_dir()
    offline = assets / "models" / "minilm-l6-ce" if assets is not None else None
    return str(offline) if offline is not None and offline.is_dir() else HUB_DEFAULT


class CrossEncoderReranker(EncoderStage):
    """``CrossEncoderReranker("BAAI/bge-reranker-v2-m3")``; a path or a hub name.

    ``device="auto"`` picks CUDA (half precision), then MPS, then CPU. ``backend``:
    ``torch``, ``onnx`` (CPU; ``quantize="int8"`` for int8 weights) or ``auto`` (torch on a
    GPU; on a CPU, ONNX int8 where a recorded check allows it, else the faster fp32 backend
    on this host: see ``llmrerank.rerankers._sentence_transformers``); see ``EncoderStage``
    for ``threads``, ``max_batch_tokens`` and ``load()``/``load_s``.
    """

    kind = "cross-encoder"
    onnx_output = "scores"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        name: str = "cross-encoder",
        backend: str = "auto",
        quantize: str = "auto",
        threads: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        onnx_cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(
            model or default_cross_encoder(),
            device=device,
            batch_size=batch_size,
            name=name,
            backend=backend,
            quantize=quantize,
            threads=threads,
            max_batch_tokens=max_batch_tokens,
            onnx_cache_dir=onnx_cache_dir,
            max_length=max_length,
        )

    def _load(self, sentence_transformers: Any, device: str) -> Any:
        max_length = self.max_length if self.backend_in_use == "torch" else None
        return sentence_transformers.CrossEncoder(self.model_name, device=device, max_length=max_length)

    def _torch_run(self, model: Any, inputs: Sequence[TextInput]) -> Any:
        import torch

        return model.predict(
            list(inputs),
            batch_size=self.batch_size,
            activation_fn=torch.nn.Identity(),
            show_progress_bar=False,
            convert_to_numpy=True,
        )

    def _timing_inputs(self) -> list[TextInput]:
        return [("where does an encoder spend its time", TIMING_TEXT)] * 32

    @property
    def effective_max_length(self) -> int:
        return self.model.max_seq_length

    def count_truncated(self, query: str, texts: Sequence[str]) -> int:
        """Pairs whose query + passage tokens exceed the model's max length."""
        return self.model.count_truncated([(query, t) for t in texts])

    def score(self, query: str, candidates: Sequence[CandidateLike]) -> list[float]:
        """Raw logits in input order."""
        query, items, _ = as_request(query, candidates)
        if not items:
            return []
        logits = self.model.run([(query, c.text) for c in items])
        return [float(x) for x in logits.reshape(len(items), -1)[:, 0]]

    def _rank(self, query: str, items: list[Candidate], top_k: int | None) -> Ranking:
        logits = self.score(query, items)
        ranking = ranking_from_scores(
            query,
            items,
            logits,
            stage=self.name,
            truncated=self.count_truncated(query, [c.text for c in items]),
        )
        with_probs = tuple(
            replace(
                item,
                stage_scores={
                    **item.stage_scores,
                    f"{self.name}:prob": sigmoid(item.stage_scores[self.name]),
                },
            )
            for item in ranking.items
        )
        return replace(ranking, items=with_probs).trimmed(top_k)
