"""The cross-encoder and bi-encoder stages with real weights (never skipped)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from llmrerank import DiskCache, UserError
from llmrerank.errors import CandidateError
from llmrerank.pipeline import build_stage
from llmrerank.rerankers.cross_encoder import CrossEncoderReranker, default_cross_encoder
from llmrerank.rerankers.dense import DenseReranker, default_dense_model

from .conftest import TrecQuery

UNRELATED = "The 1998 World Cup final was played at the Stade de France."


@pytest.fixture(scope="module")
def cross_encoder() -> CrossEncoderReranker:
    model = default_cross_encoder()
    assert Path(model).is_dir(), f"the offline cross-encoder must be used in tests, got {model}"
    return CrossEncoderReranker(model, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def bi_encoder() -> DenseReranker:
    model = default_dense_model()
    assert Path(model).is_dir(), f"the offline bi-encoder must be used in tests, got {model}"
    return DenseReranker(model, device="cpu")


def relevant_and_unrelated(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]],
) -> tuple[TrecQuery, dict[str, str]]:
    queries, qrels = dl19
    query = queries[0]
    best = next(c for c in query.candidates if qrels[query.qid].get(c["id"], 0) == 3)
    return query, best


def test_cross_encoder_prefers_a_relevant_passage(
    cross_encoder: CrossEncoderReranker, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    query, best = relevant_and_unrelated(dl19)
    ranking = cross_encoder.rerank(query.query, [{"id": "x", "text": UNRELATED}, best])
    assert ranking.ids() == [best["id"], "x"]
    top = ranking[0].stage_scores
    assert 0 < top["cross-encoder:prob"] < 1
    assert top["cross-encoder:prob"] == pytest.approx(1 / (1 + np.exp(-top["cross-encoder"])))


def test_cross_encoder_scores_are_in_input_order_and_batch_independent(
    cross_encoder: CrossEncoderReranker, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    queries, _ = dl19
    query = queries[1]
    candidates = query.candidates[:12]
    scores = cross_encoder.score(query.query, candidates)
    one_by_one = [cross_encoder.score(query.query, [c])[0] for c in candidates[:3]]
    np.testing.assert_allclose(scores[:3], one_by_one, rtol=1e-4, atol=1e-4)
    ranking = cross_encoder.rerank(query.query, candidates, top_k=5)
    assert len(ranking) == 5
    assert ranking[0].stage_scores["cross-encoder"] == pytest.approx(max(scores), abs=1e-5)


def test_cross_encoder_counts_truncation(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]],
) -> None:
    queries, _ = dl19
    short = CrossEncoderReranker(default_cross_encoder(), device="cpu", max_length=16)
    ranking = short.rerank(queries[0].query, [*queries[0].candidates[:3], {"id": "s", "text": "fleas"}])
    assert short.effective_max_length == 16
    assert ranking.truncated == 3


def test_empty_and_duplicate_inputs(cross_encoder: CrossEncoderReranker) -> None:
    assert len(cross_encoder.rerank("q", [])) == 0
    with pytest.raises(CandidateError, match="duplicate"):
        cross_encoder.rerank("q", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])


def test_async_matches_sync(cross_encoder: CrossEncoderReranker, bi_encoder: DenseReranker) -> None:
    passages = ["fleas live about three months", UNRELATED, "a flea's life cycle lasts weeks"]
    for stage in (cross_encoder, bi_encoder):
        sync = stage.rerank("how long do fleas live", passages)
        asynchronous = asyncio.run(stage.arerank("how long do fleas live", passages))
        assert sync.ids() == asynchronous.ids()


def test_bi_encoder_prefers_a_relevant_passage(
    bi_encoder: DenseReranker, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    query, best = relevant_and_unrelated(dl19)
    ranking = bi_encoder.rerank(query.query, [{"id": "x", "text": UNRELATED}, best])
    assert ranking.ids() == [best["id"], "x"]
    assert -1 <= ranking[1].stage_scores["dense"] < ranking[0].stage_scores["dense"] <= 1


def test_embedding_cache_encodes_only_new_passages(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    stage = DenseReranker(default_dense_model(), device="cpu", cache=cache)
    passages = ["fleas live about three months", UNRELATED, "a flea's life cycle lasts weeks"]
    first = stage.rerank("how long do fleas live", passages)
    assert (stage.cache_hits, stage.cache_misses) == (0, 3)
    again = stage.rerank("flea lifespan", [*passages, "new passage"])
    assert (stage.cache_hits, stage.cache_misses) == (3, 4)
    assert cache.stats()["namespaces"] == {"embeddings": 4}
    fresh = DenseReranker(default_dense_model(), device="cpu").score("how long do fleas live", passages)
    cached = [first[first.ids().index(c.id)].stage_scores["dense"] for c in first]
    assert sorted(cached) == pytest.approx(sorted(fresh), abs=1e-5)
    assert len(again) == 4


def test_bi_encoder_counts_truncation_and_honours_max_length() -> None:
    stage = DenseReranker(default_dense_model(), device="cpu", max_length=8)
    ranking = stage.rerank("q", ["one two three four five six seven eight nine ten", "short"])
    assert stage.model.max_seq_length == 8
    assert ranking.truncated == 1


def test_stage_specs() -> None:
    assert isinstance(build_stage("dense:"), DenseReranker)
    assert isinstance(build_stage("cross-encoder:"), CrossEncoderReranker)
    with pytest.raises(UserError, match="unknown stage"):
        build_stage("bm25:")


@pytest.mark.parametrize("spec", ["cross-encoder:./models/not-trained-yet", "dense:~/nope/student"])
def test_a_missing_local_folder_is_named_not_looked_up_on_the_hub(spec: str) -> None:
    stage = build_stage(spec)
    with pytest.raises(UserError, match=r"no model folder at .*it does not exist"):
        stage.rerank("q", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
