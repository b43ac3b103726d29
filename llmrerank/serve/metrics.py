"""Prometheus metrics. With several workers, ``llmrerank serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates every worker's samples."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from ..types import Ranking

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmrerank_requests_total",
            "Rerank requests by pipeline and status",
            ["pipeline", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "llmrerank_request_seconds",
            "Rerank request latency",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "llmrerank_stage_seconds", "Latency of each cascade stage", ["pipeline", "stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.llm_calls = Counter(
            "llmrerank_llm_calls_total",
            "LLM calls (cached ones included)",
            ["pipeline", "cached"],
            registry=r,
        )
        self.tokens = Counter("llmrerank_llm_tokens_total", "LLM tokens", ["pipeline", "kind"], registry=r)
        self.cost = Counter("llmrerank_llm_cost_usd_total", "LLM cost in USD", ["pipeline"], registry=r)
        self.degraded = Counter(
            "llmrerank_degraded_total",
            "Responses that kept an earlier stage's order",
            ["pipeline"],
            registry=r,
        )
        self.rejected = Counter(
            "llmrerank_rejected_total", "Requests refused: queue full, limits, auth", ["reason"], registry=r
        )
        self.queue_depth = Gauge(
            "llmrerank_llm_queue_depth", "Requests waiting for an LLM backend slot", ["backend"],
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.in_llm = Gauge(
            "llmrerank_llm_in_flight", "Requests in an LLM stage", ["backend"],
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.in_flight = Gauge(
            "llmrerank_requests_in_flight", "Rerank requests received and not yet answered",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.local_queue_depth = Gauge(
            "llmrerank_local_queue_depth", "Requests admitted to the local (CPU) stages, not running one",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.in_local = Gauge(
            "llmrerank_local_in_flight", "Local (CPU) stage runs in progress",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip

    def observe_ranking(self, pipeline: str, ranking: Ranking) -> None:
        for stage in ranking.stages:
            if not stage.skipped:
                self.stage_latency.labels(pipeline, stage.name).observe(stage.latency_s)
            if stage.cost_usd:
                self.cost.labels(pipeline).inc(stage.cost_usd)
        for call in ranking.calls:
            self.llm_calls.labels(pipeline, str(call.cached).lower()).inc()
        usage = ranking.usage
        self.tokens.labels(pipeline, "prompt").inc(usage.prompt_tokens)
        self.tokens.labels(pipeline, "completion").inc(usage.completion_tokens)
        if ranking.degraded:
            self.degraded.labels(pipeline).inc()

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
