"""The cascade inside RAG frameworks: one component per framework, each an optional extra.

* ``llmrerank.integrations.langchain.LLMRerankCompressor``: a LangChain
  ``BaseDocumentCompressor`` (``pip install "llmrerank[langchain]"``), for
  ``ContextualCompressionRetriever``.
* ``llmrerank.integrations.llamaindex.LLMRerankPostprocessor``: a LlamaIndex
  ``BaseNodePostprocessor`` (``pip install "llmrerank[llamaindex]"``), for a query engine's
  ``node_postprocessors``.
* ``llmrerank.integrations.haystack.LLMRerankRanker``: a Haystack ``@component`` ranker
  (``pip install "llmrerank[haystack]"``), for a ``haystack.Pipeline``.

Each is built from a pipeline: a ``PipelineSpec``, a mapping of its fields, the path of a
YAML file holding one, or an already built ``Reranker`` (``build_reranker``). Each returns
the framework's own document objects, best first, cut to its ``top_n`` (Haystack:
``top_k``, that framework's name): the same ids and text, the metadata a copy holding every
key it had plus one, ``"llmrerank"`` (``RESULT_KEY``), whose value is the document's
``Placement.annotation``. A framework whose documents carry a score (LlamaIndex, Haystack)
gets the final score there too. An LLM failure never raises: the cascade keeps the earlier
order and every annotation says ``degraded`` with the reason.

This package imports no framework; each adapter module imports its own.
"""

from __future__ import annotations

from ._documents import RESULT_KEY, Passage, PipelineLike, Placement, build_reranker

__all__ = ["RESULT_KEY", "Passage", "PipelineLike", "Placement", "build_reranker"]
