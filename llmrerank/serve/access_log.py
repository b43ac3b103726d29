"""One JSON line per request on the ``llmrerank.serve.access`` logger: request id, method,
path, status, latency, pipeline, documents, degraded. Never headers, so never tokens."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

__all__ = ["access_logger", "log_request"]

access_logger = logging.getLogger("llmrerank.serve.access")


def configure_access_log() -> None:
    if not access_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(handler)
        access_logger.setLevel(logging.INFO)
        access_logger.propagate = False


def log_request(**fields: Any) -> None:
    record = {"ts": round(time.time(), 3), "event": "request", "pid": os.getpid(), **fields}
    access_logger.info(json.dumps(record, separators=(",", ":"), default=str))
