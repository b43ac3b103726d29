"""int8 recipes against fp32 ONNX for both local stages: nDCG@10 on DL19 and DL20, speed.

For each model (the ``dense:`` default, all-MiniLM-L6-v2, over BM25's top 100; the
``cross-encoder:`` default, MiniLM-L6 cross-encoder, over BM25's top 50) the fp32 export is
made once through the stage itself, then every recipe quantises that same graph:

* ``dyn-default``: ``quantize_dynamic`` with its defaults (QInt8 weights; every op type it
  knows, so the embedding ``Gather`` and the attention's activation × activation MatMuls too);
  the project's int8 before this bench.
* ``dyn-matmul``: MatMul only, and only where B is a weight (``MatMulConstBOnly``): the
  embeddings and the attention scores stay fp32.
* ``dyn-matmul-pc``: the same with per-channel weight scales: the project's int8 now
  (``onnx_backend.quantize_int8``), checked on full DL19/DL20 by ``llmrerank eval int8-check``.
* ``dyn-matmul-pc-ends``: the same, with the first and last encoder layers kept fp32.
* ``dyn-matmul-pc-first`` / ``dyn-matmul-pc-last``: per-channel, with only the first (the
  last) encoder layer kept fp32.
* ``dyn-matmul-pc-ffn-out``: per-channel, with every layer's feed-forward output projection
  kept fp32 (its input follows the GELU, where activation outliers make one dynamic
  per-tensor scale coarsest).
* ``static-qdq``: ``quantize_static`` (QDQ, uint8 activations, int8 per-channel weights,
  MatMul with weight B only), activation ranges calibrated (percentile) on SciFact *train*
  claims and their BM25 passages: shipped data that share no query with DL19/DL20, so the
  quality check is not fit to the sets it is judged on.

Fidelity (label-free, on data the quality check never sees): SciFact *train* claims and
their BM25 passages through fp32 and each recipe; for the dense model the cosine between
the two embeddings of each text, for the cross-encoder the Spearman correlation of the two
score lists of each claim. A recipe is chosen here, then judged on DL19/DL20 once.

Quality: every DL19 (43) and DL20 (54) query, all of its candidates at the stage's depth;
nDCG@10 by ranx (``llmrerank.evaluation.metrics``). Speed: one run, the variants interleaved
query by query over the first ``--queries`` DL19 queries, so load from other processes
hits all alike: read the ratios to fp32. Beside it, the FLOP-based limit: real tokens ×
2 × the parameters the encoder multiplies per token (its MatMul/Gemm weights), against the
GEMM rate ONNX Runtime reaches on this host for a large fp32 MatMul and int8 MatMulInteger.

    python evals/bench/bench_int8.py [--queries 4] [--repeats 2] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llmrerank import CrossEncoderReranker, DenseReranker
from llmrerank.evaluation.datasets import GoldenSet, load_dataset
from llmrerank.evaluation.metrics import evaluate
from llmrerank.host import host_cpu
from llmrerank.rerankers import onnx_backend

STAGES: dict[str, tuple[Any, int]] = {
    "dense": (DenseReranker, 100),
    "cross-encoder": (CrossEncoderReranker, 50),
}


def weight_matmuls(model_path: Path) -> tuple[list[str], int]:
    """Names of MatMul nodes whose B is a weight, and the weights every token multiplies."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    names, params = [], 0
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in shapes:
            if node.op_type == "MatMul":
                names.append(node.name)
            params += int(np.prod(shapes[node.input[1]]))
    return names, params


class Calibration:
    """Batches of tokenised SciFact train texts (dense) or (claim, passage) pairs."""

    def __init__(self, folder: Path, stage: str, count: int) -> None:
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text())
        self.names = meta["inputs"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(meta["max_seq_length"]))
        self.tokenizer.enable_padding()
        golden = load_dataset("scifact-train", limit=count, depth=4)
        if stage == "dense":
            inputs: list[Any] = [q.query for q in golden.queries]
            inputs += [c.text for q in golden.queries for c in q.candidates[:3]]
        else:
            inputs = [(q.query, c.text) for q in golden.queries for c in q.candidates[:4]]
        self.inputs = inputs

    def reader(self) -> Any:
        from onnxruntime.quantization import CalibrationDataReader

        batches = list(self.batches())

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self.left = iter(batches)

            def get_next(self) -> dict[str, Any] | None:
                return next(self.left, None)

        return Reader()

    def batches(self) -> Iterator[dict[str, Any]]:
        for start in range(0, len(self.inputs), 8):
            encodings = self.tokenizer.encode_batch(self.inputs[start : start + 8])
            arrays = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            yield {name: arrays[name] for name in self.names}


def recipes(fp32: Path, stage: str, calibration_count: int) -> dict[str, Callable[[Path], None]]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    source = fp32 / "model.onnx"
    matmuls, _ = weight_matmuls(source)
    ends = [n for n in matmuls if "/layer.0/" in n or "/layer.5/" in n]
    last = [n for n in matmuls if "/layer.5/" in n]
    ffn_out = [n for n in matmuls if n.endswith("/output/dense/MatMul") and "/attention/" not in n]
    const_b = {"MatMulConstBOnly": True}

    def dynamic(**options: Any) -> Callable[[Path], None]:
        return lambda out: quantize_dynamic(source, out, weight_type=QuantType.QInt8, **options)

    def static(out: Path) -> None:
        calibration = Calibration(fp32, stage, calibration_count)
        quantize_static(
            source,
            out,
            calibration.reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={**const_b, "CalibPercentile": 99.999},
        )

    return {
        "dyn-default": dynamic(),
        "dyn-matmul": dynamic(op_types_to_quantize=["MatMul"], extra_options=const_b),
        "dyn-matmul-pc": lambda out: onnx_backend.quantize_int8(source, out, "dynamic-matmul-per-channel"),
        "dyn-matmul-pc-ends": dynamic(
            op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=ends, extra_options=const_b
        ),
        "dyn-matmul-pc-first": lambda out: onnx_backend.quantize_int8(
            source, out, "dynamic-matmul-per-channel-first-layer-fp32"
        ),
        "dyn-matmul-pc-last": dynamic(
            op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=last, extra_options=const_b
        ),
        "dyn-matmul-pc-ffn-out": dynamic(
            op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=ffn_out, extra_options=const_b
        ),
        "static-qdq": static,
    }


def make_variants(stage: str, work: Path, only: list[str] | None, calibration_count: int) -> dict[str, Path]:
    cls, _ = STAGES[stage]
    exports = work / "exports"
    cls(device="cpu", backend="onnx", onnx_cache_dir=exports).load()  # the stage's own fp32 export
    fp32 = next(exports.glob("*-none-v*"))
    variants = {"fp32": fp32}
    quiet = logging.getLogger()
    quiet.setLevel(logging.ERROR)
    for name, make in recipes(fp32, stage, calibration_count).items():
        if only and name not in only:
            continue
        folder = work / stage / name
        folder.mkdir(parents=True)
        for file in ("meta.json", "tokenizer.json"):
            shutil.copy(fp32 / file, folder / file)
        started = time.perf_counter()
        make(folder / "model.onnx")
        print(
            json.dumps({f"{stage}/{name}": {"quantise_s": round(time.perf_counter() - started, 1)}}),
            flush=True,
        )
        variants[name] = folder
    return variants


def encoder(folder: Path, threads: int) -> onnx_backend.OnnxEncoder:
    return onnx_backend.OnnxEncoder(
        folder, max_seq_length=None, threads=threads, max_batch_tokens=8192, batch_size=32
    )


def rank_run(
    stage: str, runtime: onnx_backend.OnnxEncoder, golden: GoldenSet, depth: int
) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    if stage == "dense":
        texts = sorted({c.text for q in golden.queries for c in q.candidates[:depth]})
        vectors = runtime.run(texts)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        row = {t: i for i, t in enumerate(texts)}
        queries = runtime.run([q.query for q in golden.queries])
        queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        for q, qv in zip(golden.queries, queries, strict=True):
            run[q.qid] = {c.id: float(vectors[row[c.text]] @ qv) for c in q.candidates[:depth]}
        return run
    for q in golden.queries:
        pairs = [(q.query, c.text) for c in q.candidates[:depth]]
        logits = runtime.run(pairs).reshape(len(pairs), -1)[:, 0]
        run[q.qid] = {c.id: float(s) for c, s in zip(q.candidates[:depth], logits, strict=True)}
    return run


def quality(
    stage: str, variants: dict[str, Path], sets: dict[str, GoldenSet], threads: int
) -> dict[str, Any]:
    _, depth = STAGES[stage]
    result: dict[str, Any] = {}
    for set_name, golden in sets.items():
        for name, folder in variants.items():
            started = time.perf_counter()
            run = rank_run(stage, encoder(folder, threads), golden, depth)
            means, _ = evaluate(golden.qrels, run, ["ndcg@10"], rel_threshold=golden.rel_threshold)
            result.setdefault(name, {})[set_name] = round(means["ndcg@10"], 4)
            print(
                json.dumps(
                    {
                        f"{stage}/{set_name}/{name}": round(means["ndcg@10"], 4),
                        "s": round(time.perf_counter() - started),
                    }
                ),
                flush=True,
            )
    for name in variants:
        result[name]["delta"] = {s: round(result[name][s] - result["fp32"][s], 4) for s in sets}
    return result


def fidelity(stage: str, variants: dict[str, Path], count: int, threads: int) -> dict[str, Any]:
    """How closely each recipe reproduces fp32 on SciFact train (no labels used)."""
    golden = load_dataset("scifact-train", limit=count, depth=20)
    runtimes = {name: encoder(folder, threads) for name, folder in variants.items()}
    result: dict[str, Any] = {"texts" if stage == "dense" else "claims": 0}
    if stage == "dense":
        texts = sorted(
            {q.query for q in golden.queries} | {c.text for q in golden.queries for c in q.candidates}
        )
        result["texts"] = len(texts)
        vectors = {}
        for name, runtime in runtimes.items():
            out = runtime.run(texts)
            vectors[name] = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        for name in runtimes:
            cosine = np.sum(vectors[name] * vectors["fp32"], axis=1)
            result[name] = {
                "mean_cosine": round(float(cosine.mean()), 6),
                "p01_cosine": round(float(np.quantile(cosine, 0.01)), 6),
                "mean_angle_deg": round(float(np.degrees(np.arccos(np.clip(cosine, -1, 1))).mean()), 3),
            }
    else:
        result["claims"] = len(golden.queries)
        scores: dict[str, list[np.ndarray]] = {name: [] for name in runtimes}
        for q in golden.queries:
            pairs = [(q.query, c.text) for c in q.candidates]
            for name, runtime in runtimes.items():
                scores[name].append(runtime.run(pairs).reshape(len(pairs), -1)[:, 0])
        for name in runtimes:
            rhos = [spearman(a, b) for a, b in zip(scores[name], scores["fp32"], strict=True)]
            result[name] = {
                "mean_spearman": round(float(np.mean(rhos)), 6),
                "min_spearman": round(min(rhos), 6),
            }
    print(json.dumps({f"{stage}/fidelity": result}), flush=True)
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def gemm_rate(threads: int, size: int = 1024, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (2·n³ per product) of a large fp32 MatMul and int8 MatMulInteger in ONNX Runtime."""
    import onnxruntime
    from onnx import TensorProto, helper

    rates = {}
    for kind, op in (("fp32", "MatMul"), ("int8", "MatMulInteger")):
        if op == "MatMul":
            types = (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT)
            feeds: dict[str, Any] = {name: np.random.rand(size, size).astype(np.float32) for name in "ab"}
        else:
            types = (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
            feeds = {
                "a": np.random.randint(0, 255, (size, size), dtype=np.uint8),
                "b": np.random.randint(-127, 127, (size, size), dtype=np.int8),
            }
        a, b, y = (
            helper.make_tensor_value_info(n, t, [size, size]) for n, t in zip("aby", types, strict=True)
        )
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "g", [a, b], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        session.run(None, feeds)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - started)
        rates[kind] = round(2 * size**3 / min(times) / 1e9, 1)
    return rates


def speed(
    stage: str, variants: dict[str, Path], golden: GoldenSet, repeats: int, threads: int, params: int
) -> dict[str, Any]:
    _, depth = STAGES[stage]
    runtimes = {name: encoder(folder, threads) for name, folder in variants.items()}
    inputs: list[list[Any]] = []
    for q in golden.queries:
        if stage == "dense":
            inputs.append([c.text for c in q.candidates[:depth]])
        else:
            inputs.append([(q.query, c.text) for c in q.candidates[:depth]])
    tokens = sum(len(e.ids) for batch in inputs for e in runtimes["fp32"].tokenize(batch, truncate=True))
    for runtime in runtimes.values():
        runtime.run(inputs[0][:8])  # warm
    latencies: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(repeats):
        for batch in inputs:
            for name, runtime in runtimes.items():
                started = time.perf_counter()
                runtime.run(batch)
                latencies[name].append(time.perf_counter() - started)
    base = sum(latencies["fp32"])
    result: dict[str, Any] = {"tokens_per_pass": tokens, "matmul_params": params}
    for name, values in latencies.items():
        total = sum(values)
        result[name] = {
            "p50_s": round(statistics.median(values), 4),
            "tokens_per_s": round(tokens * repeats / total),
            "gflop_per_s": round(tokens * repeats * 2 * params / total / 1e9, 1),
            "speedup_vs_fp32": round(base / total, 2),
        }
    print(json.dumps({f"{stage}/speed": result}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=4, help="DL19 queries for the speed run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--stages", default="dense,cross-encoder")
    parser.add_argument("--recipes", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--calibration-queries", type=int, default=32, help="SciFact train claims")
    parser.add_argument("--quality-limit", type=int, default=None, help="queries per set (all)")
    parser.add_argument("--sections", default="speed,fidelity,quality")
    parser.add_argument("--fidelity-queries", type=int, default=100, help="SciFact train claims")
    parser.add_argument("--out", default="evals/bench/results/int8.json")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    result: dict[str, Any] = {
        "machine": {
            "cpu": host_cpu(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "args": vars(args),
        "gemm_gflop_per_s": gemm_rate(args.threads),
    }
    print(json.dumps(result), flush=True)
    sets = {name: load_dataset(name, limit=args.quality_limit) for name in ("dl19", "dl20")}
    only = [r for r in args.recipes.split(",") if r] or None

    def save() -> None:
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as handle:
            handle.write(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as work:
        for stage in args.stages.split(","):
            variants = make_variants(stage, Path(work), only, args.calibration_queries)
            _, params = weight_matmuls(variants["fp32"] / "model.onnx")
            entry: dict[str, Any] = result.setdefault(stage, {})
            if "speed" in sections:
                golden = load_dataset("dl19", limit=args.queries)
                entry["speed"] = speed(stage, variants, golden, args.repeats, args.threads, params)
                save()
            if "fidelity" in sections:
                entry["fidelity"] = fidelity(stage, variants, args.fidelity_queries, args.threads)
                save()
            if "quality" in sections:
                entry["ndcg@10"] = quality(stage, variants, sets, args.threads)
                save()


if __name__ == "__main__":
    main()
