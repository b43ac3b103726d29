"""The ONNX backend of the local stages (real export of the offline models), precomputed
passage embeddings, ``llmrerank index`` and the missing-extra error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from llmrerank import DiskCache, UserError
from llmrerank.cli import main
from llmrerank.errors import CandidateError
from llmrerank.pipeline import build_stage
from llmrerank.rerankers import onnx_backend
from llmrerank.rerankers.cross_encoder import CrossEncoderReranker
from llmrerank.rerankers.dense import DenseReranker

from .conftest import TrecQuery

DL19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]


@pytest.fixture(scope="module")
def torch_stages() -> tuple[DenseReranker, CrossEncoderReranker]:
    return DenseReranker(device="cpu", backend="torch"), CrossEncoderReranker(device="cpu", backend="torch")


@pytest.fixture(scope="module")
def onnx_dense(export_dir: Path) -> DenseReranker:
    return DenseReranker(device="cpu", backend="onnx", onnx_cache_dir=str(export_dir))


@pytest.fixture(scope="module")
def onnx_cross_encoder(export_dir: Path) -> CrossEncoderReranker:
    return CrossEncoderReranker(device="cpu", backend="onnx", onnx_cache_dir=str(export_dir))


def passages(dl19: DL19, count: int = 16) -> tuple[str, list[str]]:
    query = dl19[0][2]
    return query.query, [c["text"] for c in query.candidates[:count]]


@pytest.mark.parametrize("query_index", [0, 7, 21])
def test_onnx_scores_match_torch(
    dl19: DL19,
    query_index: int,
    torch_stages: tuple[DenseReranker, CrossEncoderReranker],
    onnx_dense: DenseReranker,
    onnx_cross_encoder: CrossEncoderReranker,
) -> None:
    query = dl19[0][query_index]
    texts = [c["text"] for c in query.candidates[:16]]
    stages: list[tuple[DenseReranker | CrossEncoderReranker, DenseReranker | CrossEncoderReranker]] = [
        (onnx_dense, torch_stages[0]),
        (onnx_cross_encoder, torch_stages[1]),
    ]
    for onnx_stage, torch_stage in stages:
        np.testing.assert_allclose(
            onnx_stage.score(query.query, texts), torch_stage.score(query.query, texts), atol=1e-4
        )
        assert onnx_stage.rerank(query.query, texts).ids() == torch_stage.rerank(query.query, texts).ids()
    assert onnx_dense.backend_in_use == onnx_cross_encoder.backend_in_use == "onnx"
    assert isinstance(onnx_dense.model, onnx_backend.OnnxEncoder)


def test_int8_cross_encoder_stays_close_to_torch(
    dl19: DL19, export_dir: Path, torch_stages: tuple[DenseReranker, CrossEncoderReranker]
) -> None:
    query, texts = passages(dl19, 24)
    int8 = build_stage(f"cross-encoder:?backend=onnx&quantize=int8&onnx_cache_dir={export_dir}")
    assert isinstance(int8, CrossEncoderReranker)
    quantised = np.array(int8.score(query, texts))
    reference = np.array(torch_stages[1].score(query, texts))
    assert isinstance(int8.model, onnx_backend.OnnxEncoder)
    assert int8.model.quantize == "int8"
    assert np.abs(quantised - reference).max() < 1.0
    assert np.corrcoef(np.argsort(np.argsort(quantised)), np.argsort(np.argsort(reference)))[0, 1] > 0.9


def test_export_is_cached_by_content_hash(
    export_dir: Path, onnx_dense: DenseReranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_dense.load()
    before = sorted(p.name for p in export_dir.iterdir())

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(DenseReranker, "_load", no_export)
    again = DenseReranker(device="cpu", backend="onnx", onnx_cache_dir=str(export_dir))
    assert again.load() >= 0
    assert again.load_s is not None
    assert sorted(p.name for p in export_dir.iterdir()) == before
    source = Path(onnx_dense.model_name)
    assert any(name.startswith(onnx_backend.content_hash(source)) for name in before)


def linked_copy(source: Path, target: Path) -> Path:
    """``source``'s files as symlinks under ``target`` (a checkpoint to edit cheaply)."""
    for file in source.rglob("*"):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / file.relative_to(source)).symlink_to(file)
    return target


def test_dense_onnx_normalises_a_model_without_a_normalize_module(
    dl19: DL19, export_dir: Path, torch_stages: tuple[DenseReranker, CrossEncoderReranker], tmp_path: Path
) -> None:
    source = Path(torch_stages[0].model_name)
    folder = linked_copy(source, tmp_path / "no-normalize")
    modules = json.loads((source / "modules.json").read_text())
    (folder / "modules.json").unlink()
    (folder / "modules.json").write_text(
        json.dumps([m for m in modules if not m["type"].endswith("Normalize")])
    )
    query, texts = passages(dl19, 8)
    on_torch = DenseReranker(str(folder), device="cpu", backend="torch")
    on_onnx = DenseReranker(str(folder), device="cpu", backend="onnx", onnx_cache_dir=export_dir)
    np.testing.assert_allclose(on_onnx.score(query, texts), on_torch.score(query, texts), atol=1e-4)
    assert np.linalg.norm(on_onnx.embed_passages(texts), axis=1) == pytest.approx(1.0, abs=1e-5)


def test_an_export_keeps_the_models_own_max_length(tmp_path: Path) -> None:
    short = CrossEncoderReranker(device="cpu", backend="onnx", max_length=32, onnx_cache_dir=tmp_path)
    assert short.effective_max_length == 32
    default = CrossEncoderReranker(device="cpu", backend="onnx", onnx_cache_dir=tmp_path)
    assert default.effective_max_length == 128
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith("-none-v2")] == [
        f"{onnx_backend.content_hash(Path(default.model_name))}-none-v2"
    ]


def test_checkpoint_hash_is_remembered_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "model"
    (checkpoint / "1_Pooling").mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    memo = tmp_path / "exports"
    first = onnx_backend.checkpoint_hash(checkpoint, memo)
    assert first == onnx_backend.content_hash(checkpoint)
    hashed = onnx_backend.content_hash

    def no_rehash(model_dir: Path) -> str:
        raise AssertionError("read the checkpoint again")

    monkeypatch.setattr(onnx_backend, "content_hash", no_rehash)
    assert onnx_backend.checkpoint_hash(checkpoint, memo) == first
    (checkpoint / "config.json").write_text('{"changed": 1}')
    monkeypatch.setattr(onnx_backend, "content_hash", hashed)
    changed = onnx_backend.checkpoint_hash(checkpoint, memo)
    assert changed == hashed(checkpoint) != first
    (checkpoint / "extra.txt").write_text("x")
    assert onnx_backend.checkpoint_hash(checkpoint, memo) == hashed(checkpoint) != changed


def test_content_hash_changes_with_the_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    first = onnx_backend.content_hash(tmp_path)
    (tmp_path / "config.json").write_text('{"changed": true}')
    assert onnx_backend.content_hash(tmp_path) != first


def test_token_batches_bound_padded_tokens() -> None:
    lengths = [5, 300, 12, 12, 40, 7, 512, 3]
    batches = list(onnx_backend.token_batches(lengths, max_tokens=64, max_items=3))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 64


def test_missing_extra_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"llmrerank\[onnx\]"):
        DenseReranker(device="cpu", backend="onnx")
    with pytest.raises(UserError, match=r"llmrerank\[onnx\]"):
        build_stage("cross-encoder:?backend=onnx")
    assert CrossEncoderReranker(device="cpu").model.__class__.__name__ == "TorchRuntime"


def test_invalid_backend_options() -> None:
    with pytest.raises(UserError, match="backend="):
        DenseReranker(backend="tensorflow")
    with pytest.raises(UserError, match="onnx only"):
        CrossEncoderReranker(backend="torch", quantize="int8")
    with pytest.raises(UserError, match="quantize="):
        build_stage("dense:?backend=onnx&quantize=int4")


def test_loading_prints_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    stage = CrossEncoderReranker(device="cpu", backend="torch")
    assert stage.load_s is None
    seconds = stage.load()
    assert seconds > 0
    assert stage.load() == seconds
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


def test_precomputed_embeddings_encode_only_the_query(
    dl19: DL19, onnx_dense: DenseReranker, tmp_path: Path
) -> None:
    query, texts = passages(dl19, 10)
    vectors = onnx_dense.embed_passages(texts)
    stage = DenseReranker(
        device="cpu", backend="onnx", onnx_cache_dir=onnx_dense.onnx_cache_dir, cache=DiskCache(tmp_path)
    )
    given = [
        {"id": f"p{i}", "text": t, "embedding": (v * 3).tolist(), "embedding_model": stage.model_name}
        for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
    ]
    ranking = stage.rerank(query, [*given, {"id": "new", "text": "fleas live about three months"}])
    assert (stage.precomputed, stage.cache_misses) == (10, 1)
    expected = dict(zip([g["id"] for g in given], onnx_dense.score(query, texts), strict=True))
    for item in ranking:
        if item.id in expected:
            assert item.stage_scores["dense"] == pytest.approx(expected[item.id], abs=1e-5)

    lookup = {t: v for t, v in zip(texts, vectors, strict=True)}
    by_lookup = DenseReranker(
        device="cpu",
        backend="onnx",
        onnx_cache_dir=onnx_dense.onnx_cache_dir,
        embedding_lookup=lambda items: [lookup.get(c.text) for c in items],
    )
    assert by_lookup.rerank(query, texts).ids() == onnx_dense.rerank(query, texts).ids()
    assert by_lookup.precomputed == 10


def test_precomputed_embeddings_are_validated(onnx_dense: DenseReranker) -> None:
    def candidate(embedding: object, **extra: object) -> dict[str, object]:
        return {"id": "a", "text": "fleas", "embedding": embedding, **extra}

    with pytest.raises(CandidateError, match="shape"):
        onnx_dense.rerank("q", [candidate([0.1] * 17)])
    with pytest.raises(CandidateError, match="from 'other/model'"):
        onnx_dense.rerank("q", [candidate([0.1] * 384, embedding_model="other/model")])
    with pytest.raises(CandidateError, match="zero or not finite"):
        onnx_dense.rerank("q", [candidate([0.0] * 384)])
    with pytest.raises(CandidateError, match="not a vector"):
        onnx_dense.rerank("q", [candidate(["x"] * 384)])
    short_lookup = DenseReranker(
        onnx_dense.model_name,
        backend="onnx",
        onnx_cache_dir=onnx_dense.onnx_cache_dir,
        embedding_lookup=lambda items: [],
    )
    with pytest.raises(CandidateError, match="returned 0 vectors"):
        short_lookup.rerank("q", ["fleas"])


def test_index_fills_the_embedding_cache(dl19: DL19, export_dir: Path, tmp_path: Path) -> None:
    query, texts = passages(dl19, 12)
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"id": f"p{i}", "text": t}) for i, t in enumerate(texts[:8])]
    lines.append(json.dumps({"query": query, "candidates": texts[8:]}))
    corpus.write_text("\n".join(lines) + "\n")
    spec = f"dense:?backend=onnx&onnx_cache_dir={export_dir}"
    cache_dir = tmp_path / "cache"
    runner = CliRunner()
    first = runner.invoke(main, ["index", str(corpus), "--stage", spec, "--cache-dir", str(cache_dir)])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert (summary["passages"], summary["encoded"], summary["backend"]) == (12, 12, "onnx")
    again = json.loads(
        runner.invoke(main, ["index", str(corpus), "--stage", spec, "--cache-dir", str(cache_dir)]).output
    )
    assert (again["encoded"], again["already_cached"]) == (0, 12)
    stage = build_stage(spec, cache=DiskCache(cache_dir))
    assert isinstance(stage, DenseReranker)
    stage.rerank(query, texts)
    assert (stage.cache_hits, stage.cache_misses) == (12, 0)

    refused = runner.invoke(main, ["index", str(corpus), "--stage", "cross-encoder:"])
    assert refused.exit_code == 2
    assert "only a dense stage" in refused.output
    corpus.write_text('{"id": "x"}\n')
    broken = runner.invoke(main, ["index", str(corpus), "--stage", spec, "--cache-dir", str(cache_dir)])
    assert broken.exit_code == 2
    assert "non-empty 'text'" in broken.output
