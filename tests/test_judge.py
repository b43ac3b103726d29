import pytest

from llmrerank import LLMReranker, UserError
from llmrerank.backends import OpenAIBackend
from llmrerank.backends.base import BackendRequest
from llmrerank.testing import SimulatedJudge, WireServer
from llmrerank.testing.latent import LatentJudgement
from llmrerank.testing.sim import parse_spec

QUERY = "is water wet"
LABELS = {
    (QUERY, "Water makes things wet; it is a liquid."): 3,
    (QUERY, "Wetness describes a liquid touching a surface."): 1,
    (QUERY, "The stock market fell on Tuesday."): 0,
}
PASSAGES = [p for _, p in LABELS]
# many passages of the same grade, so noise decides their order
MANY = {(QUERY, f"passage number {i} about water and {i % 7} drops"): i % 4 for i in range(24)}


def rerank(judge: SimulatedJudge, strategy: str, passages: list[str] = PASSAGES) -> list[str]:
    with (
        WireServer(judge) as server,
        OpenAIBackend("judge", base_url=server.openai_base_url) as backend,
    ):
        return [c.text for c in LLMReranker(backend, strategy=strategy).rerank(QUERY, passages[::-1])]


def test_perfect_judge_answers_each_task_from_labels() -> None:
    judge = SimulatedJudge(LABELS)
    assert rerank(judge, "pointwise") == PASSAGES
    assert judge.calls["relevance_grade"] == 3
    assert judge.relevance(QUERY, "  Water makes things wet; it is a liquid. …") == 3
    assert judge.relevance(QUERY, "unknown text") == 0


def test_noise_is_fixed_per_pair_and_shared_by_every_output_type() -> None:
    passages = [p for _, p in MANY]
    orders = {
        s: rerank(SimulatedJudge(MANY, sigma=1.0, seed=7), s, passages) for s in ("listwise", "setwise")
    }
    # one latent reading per pair: the permutation and the best-of-set choices agree on the top
    assert orders["listwise"][:3] == orders["setwise"][:3]
    assert rerank(SimulatedJudge(MANY, sigma=1.0, seed=7), "listwise", passages) == orders["listwise"]
    perfect = rerank(SimulatedJudge(MANY), "listwise", passages)
    assert orders["listwise"] != perfect  # σ = 1 changes the order of equally graded passages
    model = LatentJudgement(sigma=1.0, seed=7)
    assert model.perceived("q", "p", 2) == model.perceived("q", "p", 2) != 2.0


def test_position_bias_prefers_what_is_shown_first() -> None:
    import random

    model = LatentJudgement(position_bias=1.0)
    rng = random.Random(0)
    assert model.prefer_first(0.0, 3.0, rng)
    assert model.best([0.0, 3.0, 1.0], rng) == 0
    assert model.order([0.0, 3.0, 1.0], rng) == [0, 1, 2]
    unbiased = LatentJudgement()
    assert unbiased.order([0.0, 3.0, 1.0], rng) == [1, 2, 0]
    assert not unbiased.prefer_first(0.0, 3.0, rng)
    with pytest.raises(ValueError, match="position_bias"):
        LatentJudgement(position_bias=1.5)


def test_the_judge_returns_first_label_logprobs_when_asked() -> None:
    from llmrerank.outputs import PermutationOutput

    output = PermutationOutput(["1", "2", "3"])
    passages = "\n".join(f'<passage id="{i + 1}">\n{p}\n</passage>' for i, p in enumerate(PASSAGES[::-1]))
    request = BackendRequest(
        messages=[{"role": "user", "content": f"<query>{QUERY}</query>\n{passages}"}],
        schema_name=output.name,
        schema=output.json_schema(),
        logprobs=True,
    )
    with (
        WireServer(SimulatedJudge(LABELS)) as server,
        OpenAIBackend("judge", base_url=server.openai_base_url) as backend,
    ):
        reply = backend.complete(request)
        plain = backend.complete(
            BackendRequest(messages=request.messages, schema_name="permutation", schema=request.schema)
        )
    assert output.parse(reply.text).value == [2, 1, 0]
    assert reply.logprobs is not None
    first = next(t for t in reply.logprobs if t.token == "3")
    assert sorted(first.top, key=lambda label: -first.top[label]) == ["3", "2", "1"]
    assert plain.logprobs is None


def test_sim_specs_name_sigma_and_bias() -> None:
    assert parse_spec("dl19") == ("dl19", 0.0, 0.0)
    assert parse_spec("dl19@1.0") == ("dl19", 1.0, 0.0)
    assert parse_spec("dl19@1.0,bias=0.2") == ("dl19", 1.0, 0.2)
    for bad in ("dl19@x", "dl19@1.0,tilt=2", "dl19@1.0,bias=2", "dl19@-1"):
        with pytest.raises(UserError, match="sim:"):
            parse_spec(bad)


def test_binary_judgements_read_relevant_as_the_top_grade() -> None:
    queries = {"q1": QUERY, "q2": "what is a drop"}
    passages = {"d1": PASSAGES[0], "d2": PASSAGES[1], "d3": PASSAGES[2]}
    judge = SimulatedJudge.from_judgements(queries, passages, {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 0}})
    assert judge.relevance(QUERY, PASSAGES[0]) == 3
    assert judge.relevance(QUERY, PASSAGES[1]) == 0  # judged for another query only
    assert judge.relevance("what is a drop", PASSAGES[1]) == 3
    graded = SimulatedJudge.from_judgements(queries, passages, {"q1": {"d1": 2, "d2": 1}})
    assert (graded.relevance(QUERY, PASSAGES[0]), graded.relevance(QUERY, PASSAGES[1])) == (2, 1)


def test_sim_scifact_judges_both_splits_from_the_beir_qrels() -> None:
    from llmrerank.evaluation.datasets import beir_passages, beir_queries, read_qrels
    from llmrerank.settings import asset
    from llmrerank.testing import simulated_backend

    folder = asset("datasets/beir-scifact")
    queries, passages = beir_queries(folder), beir_passages(folder)
    unrelated = passages["4983"]
    for split in ("train", "test"):
        qid, judged = next(iter(read_qrels(folder / "qrels" / f"{split}.tsv").items()))
        relevant = passages[next(iter(judged))]
        assert unrelated != relevant
        with simulated_backend("scifact") as backend:
            order = LLMReranker(backend, strategy="pointwise").rerank(queries[qid], [unrelated, relevant])
        assert [c.text for c in order] == [relevant, unrelated]
        assert [grade for c in order for grade in c.stage_scores.values()] == [3.0, 0.0]
    with pytest.raises(UserError, match="scifact"):
        simulated_backend("nfcorpus")
