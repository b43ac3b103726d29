"""What the local encoder stages share: a lazy, thread-safe model loaded once per stage on
the chosen device and backend, and the ``rerank``/``arerank`` verbs.

Backends: ``torch`` (sentence-transformers; the reference, and the choice on a GPU) and
``onnx`` (ONNX Runtime on CPU, optionally with int8 weights; see ``_onnx``). ``auto`` picks
torch on CUDA or MPS, else ONNX when its extra is installed, else torch.

Cold start: torch and sentence-transformers take seconds to import, so the ONNX path never
imports them once its export is cached, and ``device="auto"`` asks torch about a GPU only
on a host that could have one (see ``accelerator_possible``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._quiet import quiet_loading
from ..errors import UserError
from ..types import Candidate, CandidateLike, Ranking, as_count, as_request
from . import _onnx

logger = logging.getLogger("llmrerank")

INSTALL_HINT = 'local models need `pip install "llmrerank[local]"` (sentence-transformers)'
BACKENDS = ("auto", "torch", "onnx")
DEFAULT_MAX_BATCH_TOKENS = 8192


def import_sentence_transformers() -> Any:
    try:
        import sentence_transformers
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return sentence_transformers


# device nodes of the GPUs torch can use on Linux: NVIDIA (CUDA), AMD (ROCm), WSL2 (CUDA)
_LINUX_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def accelerator_possible() -> bool:
    """False when torch could not find a CUDA or MPS device here, decided without importing
    torch: torch is not installed, or the host is Linux with none of the device nodes a GPU
    driver creates. Elsewhere (macOS, Windows) only torch can tell, so True."""
    if importlib.util.find_spec("torch") is None:
        return False
    if sys.platform.startswith("linux"):
        return any(os.path.exists(node) for node in _LINUX_GPU_NODES)
    return True


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if not accelerator_possible():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_backend(backend: str, device: str) -> str:
    if backend != "auto":
        return backend
    if device != "cpu":
        return "torch"
    return "onnx" if _onnx.onnx_installed() else "torch"


class TorchRuntime:
    """A sentence-transformers model behind the same ``run``/``count_truncated`` as ONNX."""

    def __init__(self, model: Any, stage: EncoderStage) -> None:
        self.st = model
        self.stage = stage

    @property
    def max_seq_length(self) -> int:
        return int(self.st.max_seq_length)

    @property
    def tokenizer(self) -> Any:
        return self.st.tokenizer

    def run(self, inputs: Sequence[_onnx.TextInput]) -> Any:
        return self.stage._torch_run(self.st, inputs)

    def count_truncated(self, inputs: Sequence[_onnx.TextInput]) -> int:
        if not inputs:
            return 0
        if isinstance(inputs[0], tuple):
            firsts, seconds = zip(*inputs, strict=True)
            encoded = self.st.tokenizer(list(firsts), list(seconds), truncation=False, verbose=False)
        else:
            encoded = self.st.tokenizer(list(inputs), truncation=False, verbose=False)
        return sum(len(ids) > self.max_seq_length for ids in encoded["input_ids"])


Runtime = TorchRuntime | _onnx.OnnxEncoder


class EncoderStage:
    """Base of the local stages. Subclasses load their sentence-transformers model in
    ``_load``, run it in ``_torch_run`` and rank a non-empty list in ``_rank``; the model loads
    on first use (or on ``load()``), once, and ``load_s`` records how long that took.

    ``threads``: intra-op threads (default: the cores this process may use; for torch it sets
    ``torch.set_num_threads``, which is process-wide). ``max_batch_tokens``: ONNX batches are
    formed shortest first up to this many padded tokens (and ``batch_size`` inputs).
    ``max_length``: tokens per input (default: the model's own).

    The stages spell these options out again and forward them, rather than take
    ``**kwargs``, so that their signatures stay typed and documented where users read them.
    """

    uses_llm = False
    kind = "local model"
    onnx_output = ""

    def __init__(
        self,
        model_name: str,
        *,
        device: str,
        batch_size: int,
        name: str,
        backend: str = "auto",
        quantize: str = "none",
        threads: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        onnx_cache_dir: str | Path | None = None,
        max_length: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise UserError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
        if quantize not in _onnx.QUANTIZE_CHOICES:
            raise UserError(f"quantize={quantize!r}: use one of {', '.join(_onnx.QUANTIZE_CHOICES)}")
        if quantize != "none" and backend == "torch":
            raise UserError("quantize applies to backend=onnx only")
        if backend == "onnx":
            _onnx.require_onnx()  # a missing extra fails at construction, not mid-query
        self.model_name = model_name
        self.device = device
        self.batch_size = as_count(batch_size, "batch_size")
        self.name = name
        self.backend = backend
        self.quantize = quantize
        self.threads = None if threads is None else as_count(threads, "threads")
        self.max_batch_tokens = as_count(max_batch_tokens, "max_batch_tokens")
        self.onnx_cache_dir = Path(onnx_cache_dir).expanduser() if onnx_cache_dir else None
        self.max_length = None if max_length is None else as_count(max_length, "max_length")
        self.load_s: float | None = None
        self.backend_in_use: str | None = None
        self._model: Runtime | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r}, device={self.device!r}, backend={self.backend!r})"

    def _load(self, sentence_transformers: Any, device: str) -> Any:
        """The sentence-transformers model; for an ONNX export (``backend_in_use == "onnx"``)
        with the model's own max length, since one export serves every configured length."""
        raise NotImplementedError

    def _torch_run(self, model: Any, inputs: Sequence[_onnx.TextInput]) -> Any:
        raise NotImplementedError

    def _configured_max_length(self) -> int | None:
        return self.max_length

    def _rank(self, query: str, items: list[Candidate], top_k: int | None) -> Ranking:
        raise NotImplementedError

    def _build(self) -> Runtime:
        device = resolve_device(self.device)
        backend = resolve_backend(self.backend, device)
        self.backend_in_use = backend
        if backend == "onnx":

            def load_source() -> Any:  # only to export: a cached export needs no torch
                sentence_transformers = import_sentence_transformers()
                with quiet_loading():
                    return self._load(sentence_transformers, "cpu")

            folder = _onnx.prepare(
                self.model_name,
                quantize=self.quantize,
                cache_dir=self.onnx_cache_dir,
                load_source=load_source,
                output=self.onnx_output,
            )
            return _onnx.OnnxEncoder(
                folder,
                max_seq_length=self._configured_max_length(),
                threads=self.threads,
                max_batch_tokens=self.max_batch_tokens,
                batch_size=self.batch_size,
            )
        sentence_transformers = import_sentence_transformers()
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        with quiet_loading():
            model = self._load(sentence_transformers, device)
        if device == "cuda":
            model.half()
        return TorchRuntime(model, self)

    @property
    def model(self) -> Runtime:
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                self._model = self._build()
                self.load_s = time.perf_counter() - started
                logger.info(
                    "loaded %s %s (%s) in %.2f s",
                    self.kind,
                    self.model_name,
                    self.backend_in_use,
                    self.load_s,
                )
            return self._model

    def load(self) -> float:
        """Load (or export, the first time) the model now; the seconds that took."""
        self.model  # noqa: B018
        assert self.load_s is not None
        return self.load_s

    def _rank_or_empty(self, query: str, items: list[Candidate], top_k: int | None) -> Ranking:
        return self._rank(query, items, top_k) if items else Ranking(query=query, items=())

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        return self._rank_or_empty(*as_request(query, candidates, top_k))

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        return await asyncio.to_thread(self._rank_or_empty, *as_request(query, candidates, top_k))
