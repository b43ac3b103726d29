"""``llmrerank serve``: the pipelines of a service config behind Cohere's rerank API."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from ..errors import UserError

__all__ = ["STARTUP_FAILURE_EXIT", "serve"]

#: uvicorn's exit code for a failed startup, kept for every worker count
STARTUP_FAILURE_EXIT = 3


@click.command(short_help="Serve pipelines on Cohere's /v1/rerank and /v2/rerank API.")
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
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Serve the pipelines that build when others cannot (as allow_partial: true in the config); "
    "/readyz and /v1/models name the failed ones. Default: a pipeline that cannot be built "
    f"stops the service at start (exit {STARTUP_FAILURE_EXIT}).",
)
def serve(
    config_path: str | None, host: str, port: int, workers: int, log_level: str, allow_partial: bool
) -> None:
    """Serve reranking on /v1/rerank and /v2/rerank (Cohere's API), /v1/models, /healthz,
    /readyz and /metrics. Every pipeline is built before the port opens; one that cannot be
    built ends the command with exit code 3 and the reason on stderr (see --allow-partial)."""
    try:
        import uvicorn
    except ImportError:
        raise UserError('llmrerank serve needs the serve extra: pip install "llmrerank[serve]"') from None
    from ..serve.app import ALLOW_PARTIAL_ENV, CONFIG_ENV, STARTUP_REPORT_ENV
    from ..serve.config import ServiceConfig
    from ..serve.readiness import READY_DIR_ENV, WORKERS_ENV
    from ..serve.rerank_route import shutdown_grace_s

    config = ServiceConfig.from_yaml(config_path) if config_path else ServiceConfig.offline_default()
    if workers < 1:
        raise UserError("--workers must be at least 1")
    if config_path:
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    else:
        os.environ.pop(CONFIG_ENV, None)
    if allow_partial:
        os.environ[ALLOW_PARTIAL_ENV] = "1"
    # a worker whose startup fails writes why to PREFIX-<pid>.txt: with --workers uvicorn's
    # supervisor stops and returns normally, so the reason and the exit code would be lost
    report_prefix = os.path.join(tempfile.gettempdir(), f"llmrerank-serve-{os.getpid()}-startup")
    os.environ[STARTUP_REPORT_ENV] = report_prefix
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # workers are separate processes: their metrics meet in one directory
        metrics_dir = tempfile.mkdtemp(prefix="llmrerank-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # every worker marks itself ready in one directory: /readyz is 200 only when all have
    ready_dir = tempfile.mkdtemp(prefix="llmrerank-ready-")
    os.environ[READY_DIR_ENV] = ready_dir
    os.environ[WORKERS_ENV] = str(workers)
    exit_code: int | str | None = 0
    try:
        uvicorn.run(
            "llmrerank.serve.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,  # the service writes its own JSON access line
            # in-flight requests are answered within their deadline (plus a grace), so they
            # finish before the server would cancel them
            timeout_graceful_shutdown=shutdown_grace_s(config.limits),
        )
    except SystemExit as exc:  # uvicorn exits 3 when a single worker's startup failed
        exit_code = exc.code
    finally:
        reports = sorted(glob.glob(glob.escape(report_prefix) + "-*.txt"))
        reason = Path(reports[0]).read_text("utf-8") if reports else None
        for report in reports:
            Path(report).unlink(missing_ok=True)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(ready_dir, ignore_errors=True)
    if reason is not None:
        click.echo(f"error: {reason}", err=True)
        sys.exit(STARTUP_FAILURE_EXIT)
    if exit_code:
        sys.exit(exit_code)
