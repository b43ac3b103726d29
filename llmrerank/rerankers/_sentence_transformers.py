"""What the local encoder stages share: a lazy, thread-safe model loaded once per stage on
the chosen device and backend, and the ``rerank``/``arerank`` verbs.

Backends: ``torch`` (sentence-transformers; the reference, and the choice on a GPU) and
``onnx`` (ONNX Runtime on CPU, optionally with int8 weights; see ``onnx_backend``). ``auto`` picks
torch on CUDA or MPS, and on a CPU (with the ONNX extra installed):

* ONNX int8, when ``quantize="auto"`` (the default) and the int8 export holds a check
  (``llmrerank eval int8-check``) made on this CPU (``host.host_cpu``: its model, SIMD
  kernels' features and usable cores) that found int8 within 0.005
  nDCG@10 of fp32 on DL19 and on DL20, and faster (``onnx_backend.int8_refusal``);
* else the faster fp32 backend on this host: torch and ONNX are timed once on a fixed
  sample (a second or two, the first time a stage loads on a host) and the result is kept
  beside the fp32 export (``timing.json``), so later loads decide without torch.

``quantize="none"`` or ``"int8"`` is obeyed as given (ONNX).

Cold start: torch and sentence-transformers take seconds to import, so the ONNX path never
imports them once its export is cached, and ``device="auto"`` asks torch about a GPU only
on a host that could have one (see ``accelerator_possible``).

Long because the choice of device and backend (the int8 check, the host timing) and the
lazy load behind one lock share the stage's state; split, each half would reach into it.
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
from ..host import host_cpu
from ..types import Candidate, CandidateLike, Ranking, as_count, as_request
from . import onnx_backend

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


def sentence_transformers_installed() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None


def resolve_backend(backend: str, device: str) -> str:
    """The backend family: ``auto`` is torch on a GPU or without the ONNX extra, else ONNX
    (which quantisation, and whether torch is faster here, ``EncoderStage`` decides)."""
    if backend != "auto":
        return backend
    if device != "cpu":
        return "torch"
    return "onnx" if onnx_backend.onnx_installed() else "torch"


# the host timing's sample: 32 inputs of about 100 tokens, the size of a reranked passage
TIMING_TEXT = (
    "Dense retrieval encodes a query and each passage into vectors, and a cross-encoder reads "
    "the query and the passage together; both spend most of their time multiplying the "
    "token vectors by the weight matrices of six transformer layers, so their cost grows "
    "with the number of tokens in the batch"
)


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

    def run(self, inputs: Sequence[onnx_backend.TextInput]) -> Any:
        return self.stage._torch_run(self.st, inputs)

    def count_truncated(self, inputs: Sequence[onnx_backend.TextInput]) -> int:
        if not inputs:
            return 0
        if isinstance(inputs[0], tuple):
            firsts, seconds = zip(*inputs, strict=True)
            encoded = self.st.tokenizer(list(firsts), list(seconds), truncation=False, verbose=False)
        else:
            encoded = self.st.tokenizer(list(inputs), truncation=False, verbose=False)
        return sum(len(ids) > self.max_seq_length for ids in encoded["input_ids"])


Runtime = TorchRuntime | onnx_backend.OnnxEncoder


class EncoderStage:
    """Base of the local stages. Subclasses load their sentence-transformers model in
    ``_load``, run it in ``_torch_run`` and rank a non-empty list in ``_rank``; the model loads
    on first use (or on ``load()``), once, and ``load_s`` records how long that took.

    ``threads``: intra-op threads (default: the cores this process may use; for torch it sets
    ``torch.set_num_threads``, which is process-wide). ``max_batch_tokens``: ONNX batches are
    formed shortest first up to this many padded tokens (and ``batch_size`` inputs).
    ``max_length``: tokens per input (default: the model's own). ``quantize``: ``auto`` (int8
    only where a recorded check allows it on this CPU, see the module's docstring),
    ``none`` or ``int8`` (ONNX). After loading, ``backend_in_use``, ``quantize_in_use``
    and ``choice_reason`` say what ran and why.

    The stages spell these options out again and forward them, rather than take
    ``**kwargs``, so that their signatures stay typed and documented where users read them.
    """

    uses_llm = False
    kind = "local model"
    #: the evaluation sets an int8 check must cover for ``quantize="auto"`` to use int8
    int8_check_sets = onnx_backend.INT8_CHECK_SETS
    #: how this stage's model is quantised to int8 (one of ``onnx_backend.INT8_RECIPES``)
    int8_recipe = onnx_backend.DEFAULT_INT8_RECIPE
    onnx_output = ""

    def __init__(
        self,
        model_name: str,
        *,
        device: str,
        batch_size: int,
        name: str,
        backend: str = "auto",
        quantize: str = "auto",
        threads: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        onnx_cache_dir: str | Path | None = None,
        max_length: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise UserError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
        if quantize not in onnx_backend.QUANTIZE_CHOICES:
            raise UserError(f"quantize={quantize!r}: use one of {', '.join(onnx_backend.QUANTIZE_CHOICES)}")
        if quantize == "int8" and backend == "torch":
            raise UserError("quantize applies to backend=onnx only")
        if backend == "onnx":
            onnx_backend.require_onnx()  # a missing extra fails at construction, not mid-query
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
        self.quantize_in_use: str | None = None
        self.choice_reason = ""
        self._source: Any = None  # the model loaded to export, kept while the stage loads
        self._model: Runtime | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r}, device={self.device!r}, backend={self.backend!r})"

    def _load(self, sentence_transformers: Any, device: str) -> Any:
        """The sentence-transformers model; for an ONNX export (``backend_in_use == "onnx"``)
        with the model's own max length, since one export serves every configured length."""
        raise NotImplementedError

    def _torch_run(self, model: Any, inputs: Sequence[onnx_backend.TextInput]) -> Any:
        raise NotImplementedError

    def _configured_max_length(self) -> int | None:
        return self.max_length

    def _rank(self, query: str, items: list[Candidate], top_k: int | None) -> Ranking:
        raise NotImplementedError

    def _load_source(self) -> Any:
        """The sentence-transformers model on CPU with its own max length, to export."""
        sentence_transformers = import_sentence_transformers()
        with quiet_loading():
            self._source = self._load(sentence_transformers, "cpu")
        return self._source

    def _onnx_runtime(self, quantize: str) -> onnx_backend.OnnxEncoder:
        self.backend_in_use, self.quantize_in_use = "onnx", quantize
        folder = self.export_folder(quantize)
        return onnx_backend.OnnxEncoder(
            folder,
            max_seq_length=self._configured_max_length(),
            threads=self.threads,
            max_batch_tokens=self.max_batch_tokens,
            batch_size=self.batch_size,
        )

    def _torch_runtime(self, device: str) -> TorchRuntime:
        self.backend_in_use, self.quantize_in_use = "torch", "none"
        sentence_transformers = import_sentence_transformers()
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        with quiet_loading():
            model = self._load(sentence_transformers, device)
        if device == "cuda":
            model.half()
        return TorchRuntime(model, self)

    def export_folder(self, quantize: str) -> Path:
        """The ONNX export of this stage's model (``none`` or ``int8``), exported first if
        it is not cached."""
        return onnx_backend.prepare(
            self.model_name,
            quantize=quantize,
            cache_dir=self.onnx_cache_dir,
            load_source=self._load_source,
            output=self.onnx_output,
            recipe=self.int8_recipe,
        )

    def int8_refusal(self) -> str | None:
        """Why ``quantize="auto"`` would not use int8 here (None: it would): the check
        recorded with the int8 export, read for this CPU (see ``onnx_backend.int8_refusal``)."""
        folder = onnx_backend.find_export(
            self.model_name, quantize="int8", cache_dir=self.onnx_cache_dir, recipe=self.int8_recipe
        )
        record = None if folder is None else onnx_backend.read_record(folder / onnx_backend.INT8_CHECK_FILE)
        return onnx_backend.int8_refusal(record, host_cpu(), self.int8_recipe)

    def record_int8_check(self, record: dict[str, Any]) -> Path:
        """Keep ``record`` (what ``llmrerank eval int8-check`` measured) with the int8
        export, adding the recipe and this CPU; returns the file written."""
        path = self.export_folder("int8") / onnx_backend.INT8_CHECK_FILE
        onnx_backend.write_record(path, {**record, "recipe": self.int8_recipe, "cpu": host_cpu()})
        return path

    def _timing_inputs(self) -> list[onnx_backend.TextInput]:
        """What the host timing runs: 32 passages (a cross-encoder makes them pairs)."""
        return [TIMING_TEXT] * 32

    def _fastest_fp32(self) -> Runtime:
        """ONNX fp32 or torch, whichever the host timing kept beside the fp32 export says
        is faster on this CPU; timed now (and kept) when there is none for this CPU."""
        onnx_runtime = self._onnx_runtime("none")
        if not sentence_transformers_installed():
            self.choice_reason = "fp32 ONNX: sentence-transformers (torch) is not installed"
            return onnx_runtime
        path = self.export_folder("none") / onnx_backend.TIMING_FILE
        cpu = host_cpu()
        timing = onnx_backend.read_record(path)
        torch_runtime: TorchRuntime | None = None
        if timing is None or timing.get("cpu") != cpu:
            # the model just loaded to export, if this load exported: timed as it is
            timed = TorchRuntime(self._source, self) if self._source is not None else None
            torch_runtime = timed or self._torch_runtime("cpu")
            inputs = self._timing_inputs()
            seconds: dict[str, list[float]] = {"onnx": [], "torch": []}
            for _ in range(3):  # interleaved, so another process's load hits both alike
                for name, runtime in (("onnx", onnx_runtime), ("torch", torch_runtime)):
                    started = time.perf_counter()
                    runtime.run(inputs)
                    seconds[name].append(time.perf_counter() - started)
            timing = {"cpu": cpu, "inputs": len(inputs), **{k: min(v[1:]) for k, v in seconds.items()}}
            try:
                onnx_backend.write_record(path, timing)
            except OSError as exc:  # a read-only cache times again next time
                logger.debug("cannot keep the host timing in %s: %s", path, exc)
            if timed is not None:  # the export's model has the model's own max length
                torch_runtime = None
        if float(timing["torch"]) < float(timing["onnx"]):
            self.choice_reason = (
                "fp32 torch: faster than ONNX on this CPU "
                f"({timing['torch']:.3f} s vs {timing['onnx']:.3f} s)"
            )
            return torch_runtime or self._torch_runtime("cpu")
        self.choice_reason = (
            f"fp32 ONNX: faster than torch on this CPU ({timing['onnx']:.3f} s vs {timing['torch']:.3f} s)"
        )
        self.backend_in_use, self.quantize_in_use = "onnx", "none"
        return onnx_runtime

    def _build(self) -> Runtime:
        device = resolve_device(self.device)
        backend = resolve_backend(self.backend, device)
        if backend == "torch":
            self.choice_reason = "torch: asked for" if self.backend == "torch" else f"torch: device {device}"
            return self._torch_runtime(device)
        if self.quantize != "auto":
            self.choice_reason = f"ONNX {self.quantize}: asked for"
            return self._onnx_runtime(self.quantize)
        refusal = self.int8_refusal()
        if refusal is None:
            self.choice_reason = "ONNX int8: its recorded check is within tolerance on this CPU"
            return self._onnx_runtime("int8")
        if self.backend == "onnx":
            self.choice_reason = f"ONNX fp32: {refusal}"
            return self._onnx_runtime("none")
        runtime = self._fastest_fp32()
        self.choice_reason += f"; not int8: {refusal}"
        return runtime

    @property
    def model(self) -> Runtime:
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                try:
                    self._model = self._build()
                finally:
                    self._source = None
                self.load_s = time.perf_counter() - started
                logger.info(
                    "loaded %s %s (%s, %s) in %.2f s: %s",
                    self.kind,
                    self.model_name,
                    self.backend_in_use,
                    self.quantize_in_use,
                    self.load_s,
                    self.choice_reason,
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
