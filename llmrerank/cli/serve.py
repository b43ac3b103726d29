"""``llmrerank serve``: the pipelines of a service config behind Cohere's rerank API."""

from __future__ import annotations

import os
import shutil
import tempfile

import click

from ..errors import UserError
from ._app import main

__all__ = ["serve"]


@main.command(short_help="Serve pipelines on Cohere's /v1/rerank and /v2/rerank API.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Service YAML (pipelines, default, limits, auth, cache_dir). Default: the offline "
    "cascade dense: → 20 → local: (llama.cpp), named dense-local.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Worker processes; they share the cache."
)
@click.option("--log-level", default="warning", show_default=True, help="uvicorn's own log level.")
def serve(config_path: str | None, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve reranking on /v1/rerank and /v2/rerank (Cohere's API), /v1/models, /healthz,
    /readyz and /metrics."""
    try:
        import uvicorn
    except ImportError:
        raise UserError('llmrerank serve needs the serve extra: pip install "llmrerank[serve]"') from None
    from ..serve.app import CONFIG_ENV
    from ..serve.config import ServiceConfig

    config = ServiceConfig.from_yaml(config_path) if config_path else ServiceConfig.offline_default()
    if workers < 1:
        raise UserError("--workers must be at least 1")
    if config_path:
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    else:
        os.environ.pop(CONFIG_ENV, None)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # workers are separate processes: their metrics meet in one directory
        metrics_dir = tempfile.mkdtemp(prefix="llmrerank-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "llmrerank.serve.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,  # the service writes its own JSON access line
            # in-flight requests end within their deadline, so they finish before shutdown
            timeout_graceful_shutdown=int(config.limits.deadline_s) + 5,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
