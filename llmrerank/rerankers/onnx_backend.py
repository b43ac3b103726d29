"""The ONNX Runtime backend of the local stages: export once, optionally quantise, run.

Why this route: sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, which
pins ``transformers<4.58`` while sentence-transformers 6 needs ``transformers>=5``. Here the
loaded sentence-transformers model (pooling and normalisation included) is traced with
``torch.onnx.export``, int8 weights come from ``onnxruntime.quantization.quantize_dynamic``
(each stage names its recipe, one of ``INT8_RECIPES``: see ``quantize_int8``),
and inputs are tokenised with the model's own fast tokenizer (``tokenizers``), so nothing
beyond ``onnxruntime`` and ``onnx`` is added and no pin conflicts with transformers.

Inference needs only ``onnxruntime``, ``tokenizers`` and ``numpy``: everything else the
stage needs (the tokenizer with the model's own normalisation, the inputs the graph takes,
its default max length) is saved beside the graph at export time, and the weights sit in a
file of their own (``model.onnx.data``) that ONNX Runtime maps rather than parses. torch,
sentence-transformers and ``onnx`` are imported only to export, once per checkpoint.

Exports are cached under ``LLMRERANK_ONNX_CACHE`` (default ``~/.cache/llmrerank/onnx``) in a
folder named by the source model's content hash and the quantisation, so each model is
exported once per machine and a changed checkpoint is exported again. Hashing a checkpoint
reads every byte (90 MB for MiniLM), so the hash is remembered beside the exports with each
file's size and modification time, and read again only when one of them changes.

Records kept with an export (both JSON, both per host, since the CPU decides them):
``int8-check.json`` in an int8 export, written by ``llmrerank eval int8-check`` (nDCG@10
of fp32 and int8 on DL19 and DL20, the speed ratio, the CPU), and ``timing.json`` in an
fp32 export, the quick torch-vs-ONNX timing that ``backend="auto"`` makes once per host.
``int8_refusal`` reads the first: ``quantize="auto"`` uses int8 only where it says yes.

Long because export, quantisation, the per-host records and the runtime all read or write
one export folder's format, which is kept in this one module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._concurrency import available_cores
from ..errors import UserError

logger = logging.getLogger("llmrerank")

INSTALL_HINT = 'backend="onnx" needs `pip install "llmrerank[onnx]"` (onnxruntime and onnx)'
QUANTIZE_CHOICES = ("auto", "none", "int8")
# 2: the recorded max length is the model's own, never a stage's configured one; weights
# beside the graph (model.onnx.data)
_FORMAT = 2  # bump when the exported layout changes
# int8 recipes by name: the encoder layers each keeps in fp32. An int8 export's folder and
# its check record name the recipe, so a changed recipe is exported and checked anew.
INT8_RECIPES: dict[str, tuple[int, ...]] = {
    "dynamic-matmul-per-channel": (),
    "dynamic-matmul-per-channel-first-layer-fp32": (0,),
}
DEFAULT_INT8_RECIPE = "dynamic-matmul-per-channel"
INT8_TOLERANCE = 0.005  # nDCG@10 int8 may lose to fp32 on each check set and still be used
INT8_CHECK_SETS = ("dl19", "dl20")
INT8_CHECK_FILE = "int8-check.json"
TIMING_FILE = "timing.json"

TextInput = str | tuple[str, str]


def onnx_installed() -> bool:
    """Whether the ``onnx`` extra is installed, found without importing it (``onnx`` alone
    takes seconds to import and only the exporter needs it)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def require_onnx() -> None:
    if not onnx_installed():
        raise UserError(INSTALL_HINT)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return onnxruntime


def default_cache_dir() -> Path:
    return Path(os.environ.get("LLMRERANK_ONNX_CACHE", "~/.cache/llmrerank/onnx")).expanduser()


def resolve_model_dir(model_name: str) -> Path:
    """A local folder for a path or a hub name (from the hub cache, or downloaded once)."""
    path = Path(model_name).expanduser()
    if path.is_dir():
        return path
    if model_name.startswith((".", "/", "~")) or model_name.count("/") > 1 or path.exists():
        # a hub id is NAME or ORG/NAME; this names a local folder that is not there
        raise UserError(f"no model folder at {str(path)!r} (from {model_name!r}): it does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_name))
    except Exception as exc:
        raise UserError(f"cannot find model {model_name!r} locally or on the hub: {exc}") from exc


def _checkpoint_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file() and ".git" not in p.parts)


def content_hash(model_dir: Path) -> str:
    """Hash of every file's relative path and bytes: the identity of a checkpoint."""
    digest = hashlib.sha256()
    for file in _checkpoint_files(model_dir):
        digest.update(str(file.relative_to(model_dir)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def checkpoint_hash(model_dir: Path, memo_dir: Path) -> str:
    """``content_hash(model_dir)``, remembered in ``memo_dir`` with every file's path, size
    and modification time (as ``git status`` trusts its index): the bytes are read again
    only when a file is added, removed, resized or touched."""
    resolved = model_dir.resolve()
    stamp = []
    for file in _checkpoint_files(resolved):
        info = file.stat()
        stamp.append([str(file.relative_to(resolved)), info.st_size, info.st_mtime_ns])
    memo = memo_dir / "hashes" / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:24]}.json"
    try:
        remembered = json.loads(memo.read_text())
        if remembered["files"] == stamp and isinstance(remembered["hash"], str):
            return remembered["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = content_hash(resolved)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        staging = memo.with_name(f".{memo.name}.{os.getpid()}")
        staging.write_text(json.dumps({"path": str(resolved), "files": stamp, "hash": digest}))
        staging.replace(memo)
    except OSError as exc:  # a read-only cache still works, it only hashes every time
        logger.debug("cannot remember the hash of %s: %s", resolved, exc)
    return digest


def token_batches(lengths: Sequence[int], max_tokens: int, max_items: int) -> Iterator[list[int]]:
    """Indices grouped shortest first so that each padded batch (longest × count) stays
    within ``max_tokens`` and ``max_items``; a single over-long input gets its own batch."""
    batch: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        grown = len(batch) + 1
        if batch and (grown > max_items or grown * lengths[index] > max_tokens):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


class _Traced:
    """Wraps a sentence-transformers model so that ``torch.onnx.export`` sees positional
    tensors in and one tensor (the module's named output) out."""

    def __new__(cls, model: Any, input_names: list[str], output: str) -> Any:
        import torch

        class Traced(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, *tensors: Any) -> Any:
                return self.inner(dict(zip(input_names, tensors, strict=True)))[output]

        return Traced().eval()


class _QuietRootLogger(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def fp32_layer_matmuls(source: Path, layers: Sequence[int]) -> list[str]:
    """The weight MatMuls of these encoder layers in the graph at ``source``."""
    if not layers:
        return []
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    marks = tuple(f"/layer.{layer}/" for layer in layers)
    found = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and n.input[1] in weights and any(m in n.name for m in marks)
    ]
    if not found:  # an exporter that names nodes otherwise must not quietly quantise them all
        raise UserError(f"no MatMul of encoder layers {list(layers)} found in {source} to keep fp32")
    return found


def quantize_int8(source: Path, target: Path, recipe: str) -> None:
    """Dynamic quantisation of the MatMuls whose B is a weight, with a scale per output
    channel, except the encoder layers ``recipe`` keeps in fp32 (``INT8_RECIPES``). The
    embeddings' ``Gather`` and the attention's activation × activation MatMuls stay fp32:
    ``quantize_dynamic``'s defaults quantise those too and cost 0.02 nDCG@10
    (evals/bench/README.md, "int8 recipes", measured these and the fp32 layers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = fp32_layer_matmuls(source, INT8_RECIPES[recipe])

    quiet = _QuietRootLogger()  # the quantiser logs a pre-processing hint on root
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        logging.getLogger().removeFilter(quiet)


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(record, indent=2) + "\n")
    staging.replace(path)


def int8_refusal(record: dict[str, Any] | None, cpu: str, recipe: str) -> str | None:
    """Why int8 may not be used on ``cpu`` by the check ``record`` (None: it may). Yes
    needs a complete check of every set in ``INT8_CHECK_SETS``, made with ``recipe`` on
    this CPU (``host.host_cpu``), each within ``INT8_TOLERANCE`` nDCG@10 of fp32, and int8 faster."""
    if record is None:
        return "no int8 check recorded (run `llmrerank eval int8-check`)"
    if record.get("recipe") != recipe:
        return f"the int8 check was of recipe {record.get('recipe')!r}, not {recipe!r}"
    if record.get("cpu") != cpu:
        return f"the int8 check ran on {record.get('cpu')!r}, not on this CPU ({cpu!r})"
    sets = record.get("sets")
    if not isinstance(sets, dict):
        return "the int8 check record has no sets"
    for name in INT8_CHECK_SETS:
        entry = sets.get(name)
        if not isinstance(entry, dict) or not entry.get("complete"):
            return f"the int8 check did not cover every {name} query"
        delta = float(entry["int8"]) - float(entry["fp32"])
        if delta < -INT8_TOLERANCE:
            return f"int8 loses {-delta:.4f} nDCG@10 on {name} (more than {INT8_TOLERANCE})"
    speedup = record.get("speedup")
    if not isinstance(speedup, int | float) or speedup <= 1.0:
        return f"int8 was not faster than fp32 here (speed-up {speedup})"
    return None


def export(model: Any, output: str, target: Path, quantize: str, recipe: str) -> None:
    """Trace ``model`` (a loaded sentence-transformers model, with its own default max
    length) into ``target``."""
    import onnx
    import torch

    tokenizer = model.tokenizer.backend_tokenizer
    sample = model.tokenizer(["a query", "a longer query here"], padding=True, return_tensors="pt")
    input_names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
    axes = {name: {0: "batch", 1: "tokens"} for name in input_names}
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about Python control flow
            torch.onnx.export(
                _Traced(model.cpu().float(), input_names, output),
                tuple(sample[name] for name in input_names),
                str(staging / "model.onnx"),
                input_names=input_names,
                output_names=[output],
                dynamic_axes={**axes, output: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        if quantize == "int8":
            quantize_int8(staging / "model.onnx", staging / "model.int8.onnx", recipe)
            (staging / "model.int8.onnx").replace(staging / "model.onnx")
        # weights in a file of their own: ONNX Runtime maps it instead of parsing them out of
        # the graph's protobuf, which halves the time to open a session (a cold start's share)
        graph = onnx.load(str(staging / "model.onnx"))
        onnx.save_model(
            graph, str(staging / "model.onnx"), save_as_external_data=True, location="model.onnx.data"
        )
        tokenizer.save(str(staging / "tokenizer.json"))
        meta = {
            "format": _FORMAT,
            "inputs": input_names,
            "output": output,
            "quantize": quantize,
            **({"recipe": recipe} if quantize == "int8" else {}),
            "max_seq_length": int(model.max_seq_length),
        }
        (staging / "meta.json").write_text(json.dumps(meta))
        staging.replace(target)
    except OSError:  # another process exported it first
        if not (target / "meta.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class OnnxEncoder:
    """An exported model in an ONNX Runtime session with its fast tokenizer. ``run`` takes
    texts (bi-encoder) or (query, passage) pairs (cross-encoder) and returns one row each."""

    def __init__(
        self,
        folder: Path,
        *,
        max_seq_length: int | None,
        threads: int | None,
        max_batch_tokens: int,
        batch_size: int,
    ) -> None:
        onnxruntime = import_onnxruntime()
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text())
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names: list[str] = meta["inputs"]
        self.quantize: str = meta["quantize"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.max_seq_length: int = max_seq_length or int(meta["max_seq_length"])
        self.max_batch_tokens = max_batch_tokens
        self.batch_size = batch_size

    def tokenize(self, inputs: Sequence[TextInput], *, truncate: bool) -> list[Any]:
        """The tokenizer's encodings of ``inputs``, cut at ``max_seq_length`` if ``truncate``."""
        if truncate:
            self.tokenizer.enable_truncation(self.max_seq_length)
        else:
            self.tokenizer.no_truncation()
        return list(self.tokenizer.encode_batch(list(inputs)))

    def count_truncated(self, inputs: Sequence[TextInput]) -> int:
        return sum(len(e.ids) > self.max_seq_length for e in self.tokenize(inputs, truncate=False))

    def run(self, inputs: Sequence[TextInput]) -> Any:
        import numpy as np

        encodings = self.tokenize(inputs, truncate=True)
        rows: list[Any] = [None] * len(encodings)
        lengths = [len(e.ids) for e in encodings]
        for batch in token_batches(lengths, self.max_batch_tokens, self.batch_size):
            width = max(lengths[i] for i in batch)
            arrays = {name: np.zeros((len(batch), width), dtype=np.int64) for name in self.input_names}
            for row, index in enumerate(batch):
                encoding = encodings[index]
                size = lengths[index]
                arrays["input_ids"][row, :size] = encoding.ids
                arrays["attention_mask"][row, :size] = encoding.attention_mask
                if "token_type_ids" in arrays:
                    arrays["token_type_ids"][row, :size] = encoding.type_ids
            (output,) = self.session.run(None, arrays)
            for row, index in enumerate(batch):
                rows[index] = output[row]
        return np.asarray(rows, dtype=np.float32)


def find_export(
    model_name: str, *, quantize: str, cache_dir: Path | None, recipe: str = DEFAULT_INT8_RECIPE
) -> Path | None:
    """The export folder for ``model_name`` if it is cached, else None (nothing exported)."""
    return _folder(
        model_name, quantize=quantize, cache_dir=cache_dir, load_source=None, output="", recipe=recipe
    )


def prepare(
    model_name: str,
    *,
    quantize: str,
    cache_dir: Path | None,
    load_source: Any,
    output: str,
    recipe: str = DEFAULT_INT8_RECIPE,
) -> Path:
    """The export folder for ``model_name``, exporting it first if it is not cached.
    ``load_source()`` loads the sentence-transformers model (only called on a miss)."""
    folder = _folder(
        model_name,
        quantize=quantize,
        cache_dir=cache_dir,
        load_source=load_source,
        output=output,
        recipe=recipe,
    )
    assert folder is not None
    return folder


def _folder(
    model_name: str, *, quantize: str, cache_dir: Path | None, load_source: Any, output: str, recipe: str
) -> Path | None:
    export_allowed = load_source is not None
    require_onnx()
    if quantize not in ("none", "int8"):
        raise UserError(f"quantize={quantize!r}: an export is none or int8")
    source = resolve_model_dir(model_name)
    root = cache_dir or default_cache_dir()
    if recipe not in INT8_RECIPES:
        raise UserError(f"int8 recipe {recipe!r}: use one of {', '.join(INT8_RECIPES)}")
    label = f"int8.{recipe}" if quantize == "int8" else quantize
    folder = root / f"{checkpoint_hash(source, root)}-{label}-v{_FORMAT}"
    if not (folder / "meta.json").is_file():
        if not export_allowed:
            return None
        folder.parent.mkdir(parents=True, exist_ok=True)
        logger.info("exporting %s to ONNX (%s) in %s", model_name, quantize, folder)
        export(load_source(), output, folder, quantize, recipe)
    return folder
