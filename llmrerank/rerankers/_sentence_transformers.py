"""What the local encoder stages share: a lazy, thread-safe model on the chosen device
(CUDA in half precision, then Apple MPS, then CPU) and the ``rerank``/``arerank`` verbs."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from ..types import Candidate, CandidateLike, Ranking, as_candidates

logger = logging.getLogger("llmrerank")

INSTALL_HINT = 'local models need `pip install "llmrerank[local]"` (sentence-transformers)'


def import_sentence_transformers() -> Any:
    try:
        import sentence_transformers
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return sentence_transformers


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


class EncoderStage:
    """Base of the local stages. Subclasses build the model in ``_load`` and rank a
    non-empty candidate list in ``_rank``; the model loads on first use, once."""

    uses_llm = False
    kind = "local model"

    def __init__(self, model_name: str, *, device: str, batch_size: int, name: str) -> None:
        self.model_name = model_name
        self.device = device
        self.batch_size = batch_size
        self.name = name
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r}, device={self.device!r})"

    def _load(self, sentence_transformers: Any, device: str) -> Any:
        raise NotImplementedError

    def _rank(self, query: str, items: list[Candidate], top_k: int | None) -> Ranking:
        raise NotImplementedError

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                device = resolve_device(self.device)
                model = self._load(import_sentence_transformers(), device)
                if device == "cuda":
                    model.half()
                self._model = model
                logger.info("loaded %s %s on %s", self.kind, self.model_name, device)
            return self._model

    def _rank_or_empty(self, query: str, items: list[Candidate], top_k: int | None) -> Ranking:
        return self._rank(query, items, top_k) if items else Ranking(query=query, items=())

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        return self._rank_or_empty(query, as_candidates(candidates), top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        items = as_candidates(candidates)
        return await asyncio.to_thread(self._rank_or_empty, query, items, top_k)
