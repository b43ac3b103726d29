"""``quantize="auto"`` uses int8 only where the check recorded with the int8 export allows it
on this CPU (present, absent, out of tolerance, partial, another CPU); ``backend="auto"``
otherwise takes the fp32 backend the host timing found faster; ``llmrerank eval
int8-check`` records its result with the export; and the int8 export loads and ranks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from llmrerank.cli import main
from llmrerank.errors import UserError
from llmrerank.host import host_cpu
from llmrerank.rerankers import onnx_backend
from llmrerank.rerankers.cross_encoder import CrossEncoderReranker
from llmrerank.rerankers.dense import DenseReranker

from .conftest import TrecQuery

DL19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]


RECIPE = "dynamic-matmul-per-channel"


def check(**changes: Any) -> dict[str, Any]:
    """A check as ``llmrerank eval int8-check`` records it, passing unless changed."""
    record: dict[str, Any] = {
        "recipe": RECIPE,
        "cpu": "Test CPU",
        "sets": {
            "dl19": {"fp32": 0.70, "int8": 0.698, "queries": 43, "complete": True},
            "dl20": {"fp32": 0.68, "int8": 0.684, "queries": 54, "complete": True},
        },
        "speedup": 1.6,
    }
    for key, value in changes.items():
        if key in ("dl19", "dl20"):
            record["sets"][key] = {**record["sets"][key], **value}
        else:
            record[key] = value
    return record


def test_a_passing_check_allows_int8() -> None:
    assert onnx_backend.int8_refusal(check(), "Test CPU", RECIPE) is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (None, "no int8 check"),
        (check(dl20={"int8": 0.674}), "loses 0.0060 nDCG@10 on dl20"),
        (check(dl19={"int8": 0.60}), "on dl19"),
        (check(dl19={"complete": False}), "every dl19 query"),
        (check(sets={"dl19": check()["sets"]["dl19"]}), "every dl20 query"),
        (check(cpu="Another CPU"), "not on this CPU"),
        (check(recipe="dynamic-every-op"), "recipe"),
        (check(speedup=0.9), "not faster"),
    ],
)
def test_int8_is_refused_without_a_passing_check_for_this_cpu(
    record: dict[str, Any] | None, reason: str
) -> None:
    refusal = onnx_backend.int8_refusal(record, "Test CPU", RECIPE)
    assert refusal is not None
    assert reason in refusal


def test_each_stage_names_a_known_recipe_and_a_layer_recipe_keeps_its_layers_fp32(
    export_dir: Path, tmp_path: Path
) -> None:
    assert DenseReranker.int8_recipe in onnx_backend.INT8_RECIPES
    assert CrossEncoderReranker.int8_recipe in onnx_backend.INT8_RECIPES
    fp32 = DenseReranker(device="cpu", backend="onnx", onnx_cache_dir=export_dir).export_folder("none")
    kept = onnx_backend.fp32_layer_matmuls(fp32 / "model.onnx", (0,))
    assert len(kept) == 6  # query, key, value, attention output, feed-forward in and out
    assert all("/layer.0/" in name for name in kept)
    onnx_backend.quantize_int8(
        fp32 / "model.onnx", tmp_path / "first.onnx", "dynamic-matmul-per-channel-first-layer-fp32"
    )
    graph = onnx.load(str(tmp_path / "first.onnx"), load_external_data=False).graph
    still_fp32 = {node.name for node in graph.node if node.op_type == "MatMul"}
    assert set(kept) <= still_fp32
    assert any(node.op_type == "MatMulInteger" for node in graph.node)
    with pytest.raises(UserError, match="no MatMul of encoder layers"):
        onnx_backend.fp32_layer_matmuls(fp32 / "model.onnx", (99,))


def passages(dl19: DL19, count: int = 24) -> tuple[str, list[str]]:
    query = dl19[0][5]
    return query.query, [c["text"] for c in query.candidates[:count]]


def test_auto_quantize_follows_the_record_with_the_export(dl19: DL19, export_dir: Path) -> None:
    def stage() -> DenseReranker:
        return DenseReranker(device="cpu", backend="onnx", onnx_cache_dir=export_dir)

    absent = stage()
    absent.load()
    assert (absent.backend_in_use, absent.quantize_in_use) == ("onnx", "none")
    assert "no int8 check" in absent.choice_reason

    path = absent.record_int8_check({k: v for k, v in check().items() if k not in ("cpu", "recipe")})
    try:
        written = json.loads(path.read_text())
        assert written["cpu"] == host_cpu()
        assert written["recipe"] == DenseReranker.int8_recipe
        within = stage()
        query, texts = passages(dl19)
        ranking = within.rerank(query, texts)
        assert within.quantize_in_use == "int8"
        assert isinstance(within.model, onnx_backend.OnnxEncoder)
        assert within.model.quantize == "int8"
        assert len(ranking) == len(texts)
        # the int8 export still ranks like fp32
        quantised, reference = np.array(within.score(query, texts)), np.array(absent.score(query, texts))
        assert np.abs(quantised - reference).max() < 0.05
        assert np.corrcoef(quantised, reference)[0, 1] > 0.98

        absent.record_int8_check(
            {k: v for k, v in check(dl20={"int8": 0.66}).items() if k not in ("cpu", "recipe")}
        )
        out_of_tolerance = stage()
        out_of_tolerance.load()
        assert out_of_tolerance.quantize_in_use == "none"
        assert "on dl20" in out_of_tolerance.choice_reason
        asked = DenseReranker(device="cpu", backend="onnx", quantize="int8", onnx_cache_dir=export_dir)
        asked.load()
        assert asked.quantize_in_use == "int8"  # an explicit int8 needs no check
    finally:
        path.unlink()


@pytest.mark.parametrize("kind", [DenseReranker, CrossEncoderReranker])
def test_auto_backend_takes_the_fp32_backend_timed_faster_on_this_host(
    export_dir: Path, kind: type[DenseReranker] | type[CrossEncoderReranker]
) -> None:
    timing = (
        kind(device="cpu", backend="onnx", onnx_cache_dir=export_dir).export_folder("none") / "timing.json"
    )
    timing.write_text(json.dumps({"cpu": "Another CPU", "torch": 0.1, "onnx": 9.9}))
    measured = kind(device="cpu", onnx_cache_dir=export_dir)
    measured.load()
    kept = json.loads(timing.read_text())
    assert kept["cpu"] == host_cpu()  # another CPU's timing is not trusted: timed again
    faster = "torch" if kept["torch"] < kept["onnx"] else "onnx"
    assert measured.backend_in_use == faster
    assert "not int8: no int8 check" in measured.choice_reason
    for faster in ("torch", "onnx"):
        slower = "onnx" if faster == "torch" else "torch"
        timing.write_text(json.dumps({"cpu": host_cpu(), faster: 0.1, slower: 0.2}))
        stage = kind(device="cpu", onnx_cache_dir=export_dir)
        stage.load()
        assert (stage.backend_in_use, stage.quantize_in_use) == (faster, "none")
        assert stage.choice_reason.startswith(f"fp32 {'torch' if faster == 'torch' else 'ONNX'}: faster")


def test_int8_check_command_keeps_its_result_with_the_export(export_dir: Path) -> None:
    done = CliRunner().invoke(
        main,
        ["eval", "int8-check", f"dense:?onnx_cache_dir={export_dir}", "--limit", "1", "--depth", "8"],
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    printed = json.loads(done.output)
    path = Path(printed["path"])
    try:
        assert f"-int8.{DenseReranker.int8_recipe}-" in path.parent.name
        kept = json.loads(path.read_text())
        assert kept["sets"] == printed["sets"]
        for name in ("dl19", "dl20"):
            assert kept["sets"][name]["queries"] == 1
            assert kept["sets"][name]["complete"] is False
            assert 0 <= kept["sets"][name]["int8"] <= 1
        assert kept["depth"] == 8
        assert kept["speedup"] > 0
        # a limited check is kept but never lets int8 in
        assert "did not cover every dl19 query" in printed["refusal"]
        stage = DenseReranker(device="cpu", backend="onnx", onnx_cache_dir=export_dir)
        stage.load()
        assert stage.quantize_in_use == "none"
    finally:
        path.unlink()
