"""Anthropic's Message Batches: create a batch of Messages requests, poll it, stream the
JSONL results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._errors import translate_sdk_error
from .anthropic import AnthropicBackend
from .base import BackendReply
from .batch_base import BatchClient, BatchFailure, BatchItem, BatchStatus

__all__ = ["AnthropicBatchClient"]


class AnthropicBatchClient(BatchClient):
    backend: AnthropicBackend

    def __init__(self, backend: AnthropicBackend) -> None:
        self.backend = backend

    def _params(self, item: BatchItem) -> dict[str, Any]:
        params: dict[str, Any] = self.backend.request_arguments(item.request)
        params.update(params.pop("extra_body", {}))
        return params

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except self.backend.sdk.AnthropicError as exc:
            raise translate_sdk_error(exc, self.backend.sdk, self.provider) from exc

    def submit(self, items: Sequence[BatchItem]) -> str:
        requests = [{"custom_id": item.custom_id, "params": self._params(item)} for item in items]
        batch = self._call(self.backend.clients.sync.messages.batches.create, requests=requests)
        return str(batch.id)

    def status(self, batch_id: str) -> BatchStatus:
        batch = self._call(self.backend.clients.sync.messages.batches.retrieve, batch_id)
        counts = batch.request_counts
        return BatchStatus(
            batch_id=batch_id,
            state=str(batch.processing_status),
            done=batch.processing_status == "ended",
            counts={
                "processing": counts.processing,
                "succeeded": counts.succeeded,
                "errored": counts.errored,
                "canceled": counts.canceled,
                "expired": counts.expired,
            },
        )

    def results(self, batch_id: str) -> dict[str, BackendReply | BatchFailure]:
        outcomes: dict[str, BackendReply | BatchFailure] = {}
        for entry in self._call(self.backend.clients.sync.messages.batches.results, batch_id):
            result = entry.result
            if result.type == "succeeded":
                outcomes[entry.custom_id] = self.backend.parse_reply(result.message)
            else:
                error = getattr(result, "error", None)
                detail = getattr(getattr(error, "error", None), "message", "") if error else ""
                outcomes[entry.custom_id] = BatchFailure(result.type, str(detail))
        return outcomes
