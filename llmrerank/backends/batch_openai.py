"""OpenAI's Batch API: upload a JSONL of chat-completion requests (Files), create a batch,
poll it, download the output and error files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import BackendError
from ._errors import translate_sdk_error
from .base import BackendReply
from .batch_base import BatchClient, BatchFailure, BatchItem, BatchStatus
from .openai import OpenAIBackend

__all__ = ["OpenAIBatchClient"]

_FINISHED = ("completed", "failed", "expired", "cancelled")


class OpenAIBatchClient(BatchClient):
    backend: OpenAIBackend

    def __init__(self, backend: OpenAIBackend) -> None:
        self.backend = backend

    def _line(self, item: BatchItem) -> str:
        body = self.backend.request_arguments(item.request)
        body.update(body.pop("extra_body", {}))
        return json.dumps(
            {"custom_id": item.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        )

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except self.backend.sdk.OpenAIError as exc:
            raise translate_sdk_error(exc, self.backend.sdk, self.provider) from exc

    def submit(self, items: Sequence[BatchItem]) -> str:
        client = self.backend.clients.sync
        payload = "\n".join(self._line(item) for item in items).encode() + b"\n"
        upload = self._call(client.files.create, file=("requests.jsonl", payload), purpose="batch")
        batch = self._call(
            client.batches.create,
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        return str(batch.id)

    def status(self, batch_id: str) -> BatchStatus:
        batch = self._call(self.backend.clients.sync.batches.retrieve, batch_id)
        counts = batch.request_counts
        return BatchStatus(
            batch_id=batch_id,
            state=str(batch.status),
            done=batch.status in _FINISHED,
            counts={"total": counts.total, "completed": counts.completed, "failed": counts.failed}
            if counts
            else {},
        )

    def _file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        text = self._call(self.backend.clients.sync.files.content, file_id).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _outcome(self, line: dict[str, Any]) -> BackendReply | BatchFailure:
        response = line.get("response") or {}
        error = line.get("error")
        if error or response.get("status_code") != 200:
            error = error or (response.get("body") or {}).get("error") or {}
            code = str(error.get("code") or response.get("status_code") or "")
            kind = "expired" if code == "batch_expired" else "errored"
            return BatchFailure(kind, f"{code}: {error.get('message', '')}".strip())
        try:
            completion = self.backend.sdk.types.chat.ChatCompletion.model_validate(response["body"])
            return self.backend.parse_reply(completion)
        except (ValueError, KeyError, BackendError) as exc:
            return BatchFailure("errored", f"unreadable reply: {exc}")

    def results(self, batch_id: str) -> dict[str, BackendReply | BatchFailure]:
        batch = self._call(self.backend.clients.sync.batches.retrieve, batch_id)
        outcomes: dict[str, BackendReply | BatchFailure] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            for line in self._file_lines(file_id):
                outcomes[str(line["custom_id"])] = self._outcome(line)
        return outcomes
