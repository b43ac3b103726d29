"""The wire-format test server with the providers' batch endpoints.

``BatchWireServer`` serves OpenAI's Files + Batches (``POST /v1/files``, ``GET
/v1/files/ID/content``, ``POST/GET /v1/batches[/ID]``) and Anthropic's Message Batches
(``POST/GET /v1/messages/batches[/ID]``, ``GET .../ID/results``) beside the chat endpoints.
A batch is in progress for ``turnaround_s`` seconds, then ends: every request is answered
by the same handler as online calls, a ``Fault`` becomes that request's error (a partial
failure), and requests for which ``expire(request)`` is true come back expired.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Literal

from .server import Fault, Handler, Hang, WireRequest, WireServer, error_body, success_body

__all__ = ["BatchWireServer"]

Api = Literal["openai", "anthropic"]


@dataclass
class _Batch:
    id: str
    api: Api
    requests: list[tuple[str, dict[str, Any]]]
    created: float
    input_file_id: str = ""
    results: list[dict[str, Any]] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    expired: int = 0
    output_files: tuple[str | None, str | None] | None = None


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat().replace("+00:00", "Z")


def _json(status: int, body: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(body).encode(), "application/json"


class BatchWireServer(WireServer):
    """``submitted`` lists every (api, custom_id) a batch was created with, in order, so
    tests can count what was paid for."""

    def __init__(
        self,
        handler: Handler,
        *,
        delay_s: float = 0.0,
        turnaround_s: float = 0.0,
        expire: Callable[[WireRequest], bool] | None = None,
    ) -> None:
        super().__init__(handler, delay_s=delay_s)
        self.turnaround_s = turnaround_s
        self.expire = expire
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}
        self.submitted: list[tuple[str, str]] = []
        self._batch_lock = threading.Lock()

    def start(self) -> BatchWireServer:
        super().start()
        return self

    def __enter__(self) -> BatchWireServer:
        return self.start()

    # -- processing ---------------------------------------------------------------------
    def _answer(self, api: Api, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """(status, body) for one request, or None when it expired."""
        request = WireRequest(api=api, body=body, headers={})
        if self.expire is not None and self.expire(request):
            return None
        response = self.handler(request)
        if isinstance(response, Hang):
            response = response.then
        if isinstance(response, Fault):
            return response.status, error_body(api, response.status, response.message)
        return 200, success_body(request, response)

    def _finish(self, batch: _Batch) -> None:
        if batch.results is not None or time.time() - batch.created < self.turnaround_s:
            return
        results: list[dict[str, Any]] = []
        for custom_id, body in batch.requests:
            answer = self._answer(batch.api, body)
            if batch.api == "anthropic":
                if answer is None:
                    result: dict[str, Any] = {"type": "expired"}
                elif answer[0] == 200:
                    result = {"type": "succeeded", "message": answer[1]}
                else:
                    result = {"type": "errored", "error": answer[1]}
                batch.expired += answer is None
                results.append({"custom_id": custom_id, "result": result})
            elif answer is None:
                batch.expired += 1
                error = {"code": "batch_expired", "message": "not processed in the window"}
                batch.errors.append(
                    {"id": uuid.uuid4().hex, "custom_id": custom_id, "response": None, "error": error}
                )
            else:
                line = {
                    "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                    "custom_id": custom_id,
                    "response": {"status_code": answer[0], "request_id": uuid.uuid4().hex, "body": answer[1]},
                    "error": None,
                }
                (results if answer[0] == 200 else batch.errors).append(line)
        batch.results = results

    def _file(self, lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        file_id = f"file-{uuid.uuid4().hex[:20]}"
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return file_id

    # -- OpenAI ---------------------------------------------------------------------------
    def _openai_batch(self, batch: _Batch) -> dict[str, Any]:
        self._finish(batch)
        done = batch.results is not None
        failed = len(batch.errors) - batch.expired
        body: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "created_at": int(batch.created),
            "status": ("expired" if batch.expired else "completed") if done else "in_progress",
            "request_counts": {
                "total": len(batch.requests),
                "completed": len(batch.results or []),
                "failed": max(0, failed),
            },
            "output_file_id": None,
            "error_file_id": None,
        }
        if done:
            if batch.output_files is None:
                batch.output_files = (self._file(batch.results or []), self._file(batch.errors))
            body["output_file_id"], body["error_file_id"] = batch.output_files
        return body

    def _upload(self, headers: Any, raw: bytes) -> tuple[int, bytes, str]:
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {headers.get('Content-Type', '')}\r\n\r\n".encode() + raw
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                file_id = f"file-{uuid.uuid4().hex[:20]}"
                data = part.get_payload(decode=True)
                self.files[file_id] = data if isinstance(data, bytes) else b""
                return _json(
                    200,
                    {
                        "id": file_id,
                        "object": "file",
                        "bytes": len(self.files[file_id]),
                        "created_at": int(time.time()),
                        "filename": "requests.jsonl",
                        "purpose": "batch",
                        "status": "processed",
                    },
                )
        return _json(400, error_body("openai", 400, "no file part"))

    def _openai(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, bytes, str] | None:
        parts = path.split("/")[2:]  # after /v1
        if method == "POST" and parts == ["files"]:
            return self._upload(headers, raw)
        if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            data = self.files.get(parts[1])
            return (200, data, "application/octet-stream") if data is not None else _json(404, {})
        if method == "POST" and parts == ["batches"]:
            body = json.loads(raw)
            lines = self.files.get(body["input_file_id"], b"").decode().splitlines()
            requests = [(str(r["custom_id"]), r["body"]) for r in map(json.loads, filter(None, lines))]
            batch = self._create("openai", requests)
            batch.input_file_id = body["input_file_id"]
            return _json(200, self._openai_batch(batch))
        if method == "GET" and parts == ["batches"]:
            listed = [self._openai_batch(b) for b in self.batches.values() if b.api == "openai"]
            return _json(200, {"object": "list", "data": listed, "has_more": False})
        if method == "GET" and len(parts) == 2 and parts[0] == "batches" and parts[1] in self.batches:
            return _json(200, self._openai_batch(self.batches[parts[1]]))
        return None

    # -- Anthropic ------------------------------------------------------------------------
    def _anthropic_batch(self, batch: _Batch) -> dict[str, Any]:
        self._finish(batch)
        done = batch.results is not None
        kinds = [r["result"]["type"] for r in batch.results or []]
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if done else "in_progress",
            "request_counts": {
                "processing": 0 if done else len(batch.requests),
                "succeeded": kinds.count("succeeded"),
                "errored": kinds.count("errored"),
                "canceled": 0,
                "expired": kinds.count("expired"),
            },
            "created_at": _iso(batch.created),
            "expires_at": _iso(batch.created + 86400),
            "ended_at": _iso(time.time()) if done else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch.id}/results" if done else None,
        }

    def _anthropic(self, method: str, path: str, raw: bytes) -> tuple[int, bytes, str] | None:
        parts = path.split("/")[3:]  # after /v1/messages
        if method == "POST" and parts == ["batches"]:
            requests = [(str(r["custom_id"]), r["params"]) for r in json.loads(raw)["requests"]]
            return _json(200, self._anthropic_batch(self._create("anthropic", requests)))
        if method == "GET" and parts == ["batches"]:
            listed = [self._anthropic_batch(b) for b in self.batches.values() if b.api == "anthropic"]
            return _json(200, {"data": listed, "has_more": False, "first_id": None, "last_id": None})
        if method == "GET" and len(parts) >= 2 and parts[0] == "batches" and parts[1] in self.batches:
            batch = self.batches[parts[1]]
            if len(parts) == 2:
                return _json(200, self._anthropic_batch(batch))
            if parts[2:] == ["results"] and batch.results is not None:
                data = "".join(json.dumps(line) + "\n" for line in batch.results).encode()
                return 200, data, "application/binary"
        return None

    # -- routing --------------------------------------------------------------------------
    def _create(self, api: Api, requests: list[tuple[str, dict[str, Any]]]) -> _Batch:
        prefix = "msgbatch_" if api == "anthropic" else "batch_"
        batch = _Batch(id=prefix + uuid.uuid4().hex[:20], api=api, requests=requests, created=time.time())
        self.batches[batch.id] = batch
        self.submitted += [(api, custom_id) for custom_id, _ in requests]
        return batch

    def route(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, bytes, str] | None:
        with self._batch_lock:
            if path.startswith("/v1/messages/batches"):
                return self._anthropic(method, path, raw)
            if path.startswith(("/v1/files", "/v1/batches")):
                return self._openai(method, path, headers, raw)
        return None
