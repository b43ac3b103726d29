"""The framework components, each inside its framework's own pipeline, over the real packages:
LangChain's ContextualCompressionRetriever, a LlamaIndex query engine, a Haystack Pipeline.

The cascade is real: the dense stage (all-MiniLM-L6-v2) narrows a TREC DL 2019 query's BM25
top-20 to 8 and the simulated DL19 judge (``sim:dl19``, perfect grades over HTTP) orders
them. Each component must give the ranking the cascade gives when called directly, keep its
framework's documents and their metadata, honour its ``top_n`` (Haystack: ``top_k``), and,
when the LLM fails, return the dense stage's order marked degraded instead of raising.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from haystack import Document as HaystackDocument
from haystack import Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LangChainDocument
from langchain_core.retrievers import BaseRetriever
from llama_index.core import SummaryIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers.no_text import NoText
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from llmrerank import PipelineSpec, UserError
from llmrerank.integrations import RESULT_KEY, build_reranker
from llmrerank.integrations.haystack import LLMRerankRanker
from llmrerank.integrations.langchain import LLMRerankCompressor
from llmrerank.integrations.llamaindex import LLMRerankPostprocessor
from llmrerank.rerankers.protocol import Reranker
from llmrerank.testing import Fault, Hang, WireServer, scripted
from llmrerank.types import CandidateLike, Ranking, as_candidates

from .conftest import TrecQuery

CASCADE = {"name": "dl19-cascade", "narrow_with": ["dense:"], "narrow_to": 8, "llm": "sim:dl19"}
DEPTH = 20
TOP_N = 3


@dataclass(frozen=True)
class Question:
    qid: str
    query: str
    texts: list[str]
    docids: list[str]
    grades: dict[str, int]


@pytest.fixture(scope="module")
def question(dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]) -> Question:
    queries, qrels = dl19
    first = queries[0]
    head = first.candidates[:DEPTH]
    return Question(
        first.qid, first.query, [c["text"] for c in head], [c["id"] for c in head], qrels[first.qid]
    )


@pytest.fixture(scope="module")
def cascade() -> Reranker:
    return PipelineSpec.from_dict(CASCADE).build()


@pytest.fixture(scope="module")
def dense_only() -> Reranker:
    return PipelineSpec.from_dict({"name": "dense-only", "narrow_with": ["dense:"]}).build()


class Recording:
    """Delegates to a reranker and records which verb each request came through."""

    uses_llm = True

    def __init__(self, inner: Reranker) -> None:
        self.inner = inner
        self.name = inner.name
        self.verbs: list[str] = []
        self.texts: list[list[str]] = []

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        self.verbs.append("rerank")
        self.texts.append([c.text for c in as_candidates(candidates)])
        return self.inner.rerank(query, candidates, top_k=top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        self.verbs.append("arerank")
        return await self.inner.arerank(query, candidates, top_k=top_k)


def ranked_texts(reranker: Reranker, query: str, texts: list[str], top_n: int) -> list[str]:
    """What the reranker, called directly, puts first."""
    return [item.text for item in reranker.rerank(query, texts, top_k=top_n)]


def first_stage_meta(docid: str, position: int) -> dict[str, Any]:
    return {"docid": docid, "first_stage": {"name": "bm25", "rank": position + 1}}


def check_annotated(
    metas: Sequence[Mapping[str, Any]], originals: Mapping[str, Mapping[str, Any]], *, pipeline: str
) -> list[dict[str, Any]]:
    """Every output's metadata is its input's plus the annotation; returns the annotations."""
    notes = []
    for rank, meta in enumerate(metas, 1):
        kept = {key: value for key, value in meta.items() if key != RESULT_KEY}
        assert kept == originals[meta["docid"]]
        note = dict(meta[RESULT_KEY])
        assert set(note) == {
            "rank",
            "score",
            "stage",
            "stage_scores",
            "degraded",
            "degraded_reason",
            "pipeline",
        }
        assert note["rank"] == rank
        assert note["pipeline"] == pipeline
        notes.append(note)
    scores = [note["score"] for note in notes]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)
    return notes


def check_cascade(
    notes: list[dict[str, Any]], question: Question, metas: Sequence[Mapping[str, Any]]
) -> None:
    assert all(not note["degraded"] and note["degraded_reason"] is None for note in notes)
    assert all({"dense", "llm"} <= set(note["stage_scores"]) for note in notes)
    assert question.grades[metas[0]["docid"]] == 3  # the perfect judge puts a perfect passage first


def check_degraded(notes: list[dict[str, Any]], reason: str) -> None:
    assert all(note["degraded"] for note in notes)
    assert all(reason in note["degraded_reason"] for note in notes)
    assert all("llm" not in note["stage_scores"] for note in notes)


@pytest.fixture
def refusing_llm() -> Iterator[WireServer]:
    with WireServer(scripted(Fault(401, "invalid api key"))) as server:
        yield server


@pytest.fixture
def hanging_llm() -> Iterator[WireServer]:
    with WireServer(scripted(Hang(30))) as server:
        yield server


def failing_cascade(server: WireServer, **extra: Any) -> dict[str, Any]:
    """The cascade, with its LLM an OpenAI-compatible server that fails."""
    return {**CASCADE, "name": "failing", "llm": "openai:m", "base_url": server.openai_base_url, **extra}


# -- LangChain ----------------------------------------------------------------------------


class FirstStage(BaseRetriever):
    """The BM25 top-20 the DL19 file holds, as LangChain documents."""

    documents: list[LangChainDocument]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LangChainDocument]:
        return self.documents


def langchain_documents(question: Question) -> list[LangChainDocument]:
    return [
        LangChainDocument(text, id=docid, metadata=first_stage_meta(docid, i))
        for i, (docid, text) in enumerate(zip(question.docids, question.texts, strict=True))
    ]


def langchain_retriever(
    compressor: LLMRerankCompressor, documents: list[LangChainDocument]
) -> ContextualCompressionRetriever:
    return ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=FirstStage(documents=documents)
    )


def test_langchain_compressor_in_a_contextual_compression_retriever(
    question: Question, cascade: Reranker
) -> None:
    documents = langchain_documents(question)
    originals = {d.metadata["docid"]: dict(d.metadata) for d in documents}
    recording = Recording(cascade)
    retriever = langchain_retriever(LLMRerankCompressor(recording, top_n=TOP_N), documents)
    expected = ranked_texts(cascade, question.query, question.texts, TOP_N)
    for found in (retriever.invoke(question.query), asyncio.run(retriever.ainvoke(question.query))):
        assert [d.page_content for d in found] == expected
        assert all(isinstance(d, LangChainDocument) and d.id == d.metadata["docid"] for d in found)
        notes = check_annotated([d.metadata for d in found], originals, pipeline="dl19-cascade")
        check_cascade(notes, question, [d.metadata for d in found])
    assert recording.verbs == ["rerank", "arerank"]  # the async retriever awaits arerank
    assert all(RESULT_KEY not in d.metadata for d in documents)  # the inputs are not changed


def test_langchain_compressor_degrades_when_the_llm_fails(
    question: Question, dense_only: Reranker, refusing_llm: WireServer, hanging_llm: WireServer
) -> None:
    documents = langchain_documents(question)
    originals = {d.metadata["docid"]: dict(d.metadata) for d in documents}
    expected = ranked_texts(dense_only, question.query, question.texts, TOP_N)
    refused = langchain_retriever(LLMRerankCompressor(failing_cascade(refusing_llm), top_n=TOP_N), documents)
    found = refused.invoke(question.query)
    assert [d.page_content for d in found] == expected
    check_degraded(check_annotated([d.metadata for d in found], originals, pipeline="failing"), "HTTP 401")
    slow = failing_cascade(hanging_llm, llm_timeout_s=0.5)
    found = asyncio.run(
        langchain_retriever(LLMRerankCompressor(slow, top_n=TOP_N), documents).ainvoke(question.query)
    )
    assert [d.page_content for d in found] == expected
    check_degraded(
        check_annotated([d.metadata for d in found], originals, pipeline="failing"), "timeout after 0.5s"
    )


# -- LlamaIndex ---------------------------------------------------------------------------


def llamaindex_nodes(question: Question) -> list[TextNode]:
    return [
        TextNode(text=text, id_=docid, metadata=first_stage_meta(docid, i))
        for i, (docid, text) in enumerate(zip(question.docids, question.texts, strict=True))
    ]


def query_engine(postprocessor: LLMRerankPostprocessor, nodes: list[TextNode]) -> RetrieverQueryEngine:
    """A query engine over a summary index (its retriever returns every node, in order);
    no answer is written (NoText), so no LLM of LlamaIndex is asked."""
    return RetrieverQueryEngine(
        SummaryIndex(nodes).as_retriever(), NoText(llm=MockLLM()), node_postprocessors=[postprocessor]
    )


def test_llamaindex_postprocessor_in_a_query_engine(question: Question, cascade: Reranker) -> None:
    nodes = llamaindex_nodes(question)
    originals = {n.node_id: dict(n.metadata) for n in nodes}
    recording = Recording(cascade)
    engine = query_engine(LLMRerankPostprocessor(recording, top_n=TOP_N), nodes)
    expected = ranked_texts(cascade, question.query, question.texts, TOP_N)
    for response in (engine.query(question.query), asyncio.run(engine.aquery(question.query))):
        found = response.source_nodes
        assert [n.node.get_content(MetadataMode.NONE) for n in found] == expected
        assert [n.node_id for n in found] == [n.metadata["docid"] for n in found]
        notes = check_annotated([n.metadata for n in found], originals, pipeline="dl19-cascade")
        check_cascade(notes, question, [n.metadata for n in found])
        assert [n.score for n in found] == [note["score"] for note in notes]
        # the annotation is for the app, not for the prompt that answers or for embeddings
        assert all(RESULT_KEY not in n.node.get_content(MetadataMode.LLM) for n in found)
        assert all(RESULT_KEY not in n.node.get_content(MetadataMode.EMBED) for n in found)
        assert "docid" in found[0].node.get_content(MetadataMode.LLM)
    assert recording.verbs == ["rerank", "arerank"]
    assert all(RESULT_KEY not in n.metadata and not n.excluded_llm_metadata_keys for n in nodes)


def test_llamaindex_postprocessor_degrades_when_the_llm_fails(
    question: Question, dense_only: Reranker, refusing_llm: WireServer, hanging_llm: WireServer
) -> None:
    nodes = [NodeWithScore(node=n, score=1.0) for n in llamaindex_nodes(question)]
    originals = {n.node_id: dict(n.metadata) for n in nodes}
    expected = ranked_texts(dense_only, question.query, question.texts, TOP_N)
    refused = LLMRerankPostprocessor(failing_cascade(refusing_llm), top_n=TOP_N)
    found = refused.postprocess_nodes(nodes, query_str=question.query)
    assert [n.node.get_content() for n in found] == expected
    check_degraded(check_annotated([n.metadata for n in found], originals, pipeline="failing"), "HTTP 401")
    slow = LLMRerankPostprocessor(failing_cascade(hanging_llm, llm_timeout_s=0.5), top_n=TOP_N)
    found = asyncio.run(slow.apostprocess_nodes(nodes, query_str=question.query))
    assert [n.node.get_content() for n in found] == expected
    check_degraded(
        check_annotated([n.metadata for n in found], originals, pipeline="failing"), "timeout after 0.5s"
    )
    with pytest.raises(UserError, match="needs the query"):
        refused.postprocess_nodes(nodes)


def test_llamaindex_ranks_the_text_with_the_metadata_mode_asked(question: Question) -> None:
    node = TextNode(text=question.texts[0], metadata={"title": "Fleas"}, excluded_llm_metadata_keys=["docid"])
    for mode, ranked in (
        (MetadataMode.NONE, question.texts[0]),
        (MetadataMode.LLM, f"title: Fleas\n\n{question.texts[0]}"),
    ):
        recording = Recording(build_reranker({"llm": None}))
        LLMRerankPostprocessor(recording, metadata_mode=mode).postprocess_nodes(
            [NodeWithScore(node=node)], query_str="q"
        )
        assert recording.texts == [[ranked]]


# -- Haystack -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def document_store(dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]) -> InMemoryDocumentStore:
    """The first DL19 query's 100 BM25 candidates, indexed for Haystack's own BM25."""
    first = dl19[0][0]
    store = InMemoryDocumentStore()
    store.write_documents(
        [
            HaystackDocument(content=c["text"], meta=first_stage_meta(c["id"], i))
            for i, c in enumerate(first.candidates)
        ]
    )
    return store


def haystack_pipeline(store: InMemoryDocumentStore, ranker: LLMRerankRanker) -> Pipeline:
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(store, top_k=DEPTH))
    pipe.add_component("ranker", ranker)
    pipe.connect("retriever.documents", "ranker.documents")
    return pipe


def haystack_inputs(query: str, **ranker: Any) -> dict[str, dict[str, Any]]:
    return {"retriever": {"query": query}, "ranker": {"query": query, **ranker}}


def test_haystack_ranker_in_a_pipeline(
    question: Question, cascade: Reranker, document_store: InMemoryDocumentStore
) -> None:
    recording = Recording(cascade)
    pipe = haystack_pipeline(document_store, LLMRerankRanker(recording, top_k=TOP_N))
    inputs = haystack_inputs(question.query)
    for result in (
        pipe.run(inputs, include_outputs_from={"retriever"}),
        asyncio.run(pipe.run_async(inputs, include_outputs_from={"retriever"})),
    ):
        retrieved: list[HaystackDocument] = result["retriever"]["documents"]
        found: list[HaystackDocument] = result["ranker"]["documents"]
        originals = {d.meta["docid"]: dict(d.meta) for d in retrieved}
        expected = ranked_texts(cascade, question.query, [d.content or "" for d in retrieved], TOP_N)
        assert [d.content for d in found] == expected
        by_docid = {d.meta["docid"]: d for d in retrieved}
        assert all(d.id == by_docid[d.meta["docid"]].id for d in found)  # Haystack's ids are kept
        notes = check_annotated([d.meta for d in found], originals, pipeline="dl19-cascade")
        check_cascade(notes, question, [d.meta for d in found])
        assert [d.score for d in found] == [note["score"] for note in notes]
        # the retriever's own BM25 score stays beside the stages' as the input score
        assert [note["stage_scores"]["input"] for note in notes] == [
            by_docid[d.meta["docid"]].score for d in found
        ]
        assert all(RESULT_KEY not in d.meta for d in retrieved)
    assert recording.verbs == ["rerank", "arerank"]  # Pipeline.run_async awaits the component's run_async
    # a call's top_k overrides the component's
    more = pipe.run(haystack_inputs(question.query, top_k=TOP_N + 2))["ranker"]["documents"]
    assert len(more) == TOP_N + 2


def test_haystack_ranker_degrades_when_the_llm_fails(
    dense_only: Reranker,
    document_store: InMemoryDocumentStore,
    refusing_llm: WireServer,
    hanging_llm: WireServer,
) -> None:
    query = "how long is life cycle of flea"
    for spec, reason in (
        (failing_cascade(refusing_llm), "HTTP 401"),
        (failing_cascade(hanging_llm, llm_timeout_s=0.5), "timeout after 0.5s"),
    ):
        pipe = haystack_pipeline(document_store, LLMRerankRanker(spec, top_k=TOP_N))
        sync = pipe.run(haystack_inputs(query), include_outputs_from={"retriever"})
        later = asyncio.run(pipe.run_async(haystack_inputs(query)))
        retrieved = sync["retriever"]["documents"]
        originals = {d.meta["docid"]: dict(d.meta) for d in retrieved}
        expected = ranked_texts(dense_only, query, [d.content or "" for d in retrieved], TOP_N)
        for found in (sync["ranker"]["documents"], later["ranker"]["documents"]):
            assert [d.content for d in found] == expected
            notes = check_annotated([d.meta for d in found], originals, pipeline="failing")
            check_degraded(notes, reason)


# -- building, shared by the three --------------------------------------------------------


def test_each_component_builds_from_a_spec_a_mapping_a_yaml_path_or_a_reranker(
    tmp_path: Path, question: Question
) -> None:
    raw = {"name": "judge-only", "llm": "sim:dl19", "top_k": 4}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw), "utf-8")
    spec = PipelineSpec.from_dict(raw)
    texts = question.texts[:10]
    expected = [item.text for item in spec.build().rerank(question.query, texts)]
    assert len(expected) == 4  # top_n left unset: the pipeline's own top_k
    for pipeline in (spec, raw, path, str(path), spec.build()):
        lc = LLMRerankCompressor(pipeline)
        assert [
            d.page_content
            for d in lc.compress_documents([LangChainDocument(t) for t in texts], question.query)
        ] == expected
        li = LLMRerankPostprocessor(pipeline)
        found = li.postprocess_nodes(
            [NodeWithScore(node=TextNode(text=t)) for t in texts], query_str=question.query
        )
        assert [n.node.get_content() for n in found] == expected
        hs = LLMRerankRanker(pipeline)
        found_docs = hs.run(question.query, [HaystackDocument(content=t) for t in texts])["documents"]
        assert [d.content for d in found_docs] == expected


def test_documents_without_unique_ids_are_ranked_by_position(question: Question) -> None:
    texts = question.texts[:6]
    compressor = LLMRerankCompressor({"llm": "sim:dl19"}, top_n=None)
    expected = [item.text for item in build_reranker({"llm": "sim:dl19"}).rerank(question.query, texts)]
    twins = [LangChainDocument(t, id="same") for t in texts]
    assert [d.page_content for d in compressor.compress_documents(twins, question.query)] == expected
    assert all(d.id == "same" for d in compressor.compress_documents(twins, question.query))
    assert compressor.compress_documents([], question.query) == []


def test_a_bad_pipeline_or_top_n_is_the_callers_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a pipeline"):
        LLMRerankCompressor(42)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="unknown keys"):
        LLMRerankPostprocessor({"llm": "sim:dl19", "top_n": 3})
    with pytest.raises(UserError):
        LLMRerankRanker(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="top_k must be a positive whole number"):
        LLMRerankCompressor({"llm": None}, top_n=0)
    with pytest.raises(UserError, match="top_k must be a positive whole number"):
        LLMRerankRanker({"llm": None}).run("q", [HaystackDocument(content="a")], top_k=-1)


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("llmrerank.integrations.langchain", "langchain_core", "langchain"),
        ("llmrerank.integrations.llamaindex", "llama_index", "llamaindex"),
        ("llmrerank.integrations.haystack", "haystack", "haystack"),
    ],
)
def test_a_missing_framework_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str
) -> None:
    for name in [n for n in sys.modules if n == framework or n.startswith(f"{framework}.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError, match=rf'pip install "llmrerank\[{extra}\]"') as raised:
        importlib.import_module(module)
    assert (raised.value.name or "").split(".")[0] == framework  # the missing module, named
    importlib.import_module("llmrerank.integrations")  # the shared part needs no framework
