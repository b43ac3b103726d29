"""Load on ``llmrerank serve``: throughput and tail latency at 1, 8, 32 and 128 concurrent
clients, the service's overhead against calling the library directly (same pipeline, same
run), the cache's effect, a soak (memory and errors over time), and an LLM that fails or
hangs (every request must answer within its deadline, degraded, none lost).

The LLM stage is answered by a local wire-format server (the simulated DL19 judge) at a
fixed latency; everything runs on 127.0.0.1. The service is one real ``llmrerank serve``
process (one worker); the clients, the judge server and the direct library calls share
this process, so on a small machine they compete with the service for CPU. Long because
the five measurements (levels, cache, failures, soak, the report) share one set-up.

    python evals/bench/bench_serve.py [--level-s 10] [--soak-s 600] [--out evals/bench/results/serve.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from llmrerank.pipeline import PipelineSpec
from llmrerank.serve.process import ServiceProcess
from llmrerank.settings import TREC_FILES, asset
from llmrerank.testing import Fault, Hang, SimulatedJudge, WireServer

LEVELS = (1, 8, 32, 128)
LLM_LATENCY_S = 0.2
DEADLINE_S = 1.0
DOCS_PER_REQUEST = 10


def dl19_bodies() -> list[dict[str, Any]]:
    """One request body per DL19 query: the query and its first ``DOCS_PER_REQUEST`` BM25
    passages (also used by ``bench_serve_cascade.py``)."""
    bodies = []
    for line in Path(asset(TREC_FILES["dl19"][0])).read_text().splitlines():
        record = json.loads(line)
        docs = [c["text"] for c in record["candidates"][:DOCS_PER_REQUEST]]
        bodies.append({"query": record["query"], "documents": docs})
    return bodies


def summary(
    latencies: list[float], wall_s: float, errors: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Count, throughput and latency percentiles (ms) of ``latencies`` (seconds) over
    ``wall_s``, with ``extra`` fields added."""
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2) if ordered else 0.0

    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": round(len(latencies) / wall_s, 2),
        "mean_ms": round(1000 * statistics.mean(ordered), 2) if ordered else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * ordered[-1], 2) if ordered else 0.0,
        **(extra or {}),
    }


async def drive(
    call: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]],
    bodies: list[dict[str, Any]],
    concurrency: int,
    seconds: float,
    *,
    stop: asyncio.Event | None = None,
) -> tuple[list[float], list[dict[str, Any]], int, float]:
    """``concurrency`` clients, each sending its next request as soon as the last answers,
    for ``seconds`` or until ``stop`` is set (a request in flight is still awaited). Returns
    the latencies of the calls that returned, their non-None answers, the calls that raised
    and the wall time."""
    latencies: list[float] = []
    answers: list[dict[str, Any]] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at and not (stop is not None and stop.is_set()):
            body = bodies[next(counter) % len(bodies)]
            started = time.perf_counter()
            try:
                answer = await call(body)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if answer is not None:
                answers.append(answer)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, answers, errors, time.perf_counter() - started


def _service_call(
    http: httpx.AsyncClient, model: str
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def call(body: dict[str, Any]) -> dict[str, Any]:
        reply = await http.post("/v1/rerank", json={"model": model, **body})
        if reply.status_code != 200:
            raise RuntimeError(f"{reply.status_code}: {reply.text[:200]}")
        meta: dict[str, Any] = reply.json()["meta"]
        return meta

    return call


def _library_call(
    spec: dict[str, Any], warm_up: dict[str, Any]
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """The same pipeline built by the same builder, called in this process; loaded and
    warmed first, as the service is before it reports ready."""
    reranker = PipelineSpec.from_dict(spec).build()
    asyncio.run(reranker.arerank(warm_up["query"], warm_up["documents"]))

    async def call(body: dict[str, Any]) -> None:
        candidates = [{"id": str(i), "text": t} for i, t in enumerate(body["documents"])]
        await reranker.arerank(body["query"], candidates)

    return call


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _levels(
    service: ServiceProcess, model: str, spec: dict[str, Any], bodies: list[dict[str, Any]], level_s: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in LEVELS:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
            lat, metas, errors, wall = await drive(_service_call(http, model), bodies, concurrency, level_s)
        degraded = sum(1 for m in metas if m["degraded"])
        served = summary(lat, wall, errors, {"degraded": degraded})
        library = await asyncio.to_thread(_library_call, spec, bodies[0])
        lib_lat, _, lib_errors, lib_wall = await drive(library, bodies, concurrency, level_s)
        direct = summary(lib_lat, lib_wall, lib_errors)
        out[str(concurrency)] = {
            "service": served,
            "library": direct,
            "overhead_ms_mean": round(served["mean_ms"] - direct["mean_ms"], 2),
            "latency_ratio_p50": round(served["p50_ms"] / direct["p50_ms"], 3) if direct["p50_ms"] else None,
        }
        print(f"{model} c={concurrency}: service {served} | library {direct}", flush=True)
    return out


async def _cache_effect(service: ServiceProcess, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        call = _service_call(http, "llm-cached")
        cold_lat, cold_metas, cold_err, cold_wall = await _drive_once(call, bodies, 8)
        warm_lat, warm_metas, warm_err, warm_wall = await _drive_once(call, bodies, 8)
    return {
        "cold": summary(
            cold_lat, cold_wall, cold_err, {"cached_calls": sum(m["cached_calls"] for m in cold_metas)}
        ),
        "warm": summary(
            warm_lat, warm_wall, warm_err, {"cached_calls": sum(m["cached_calls"] for m in warm_metas)}
        ),
    }


async def _drive_once(
    call: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    bodies: list[dict[str, Any]],
    concurrency: int,
) -> tuple[list[float], list[dict[str, Any]], int, float]:
    """Each body exactly once, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    metas: list[dict[str, Any]] = []
    errors = 0

    async def one(body: dict[str, Any]) -> None:
        nonlocal errors
        async with gate:
            started = time.perf_counter()
            try:
                metas.append(await call(body))
            except Exception:
                errors += 1
                return
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return latencies, metas, errors, time.perf_counter() - started


async def _soak(service: ServiceProcess, bodies: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    assert service.process is not None
    pid = service.process.pid
    samples: list[dict[str, float]] = []
    started = time.perf_counter()
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append({"t_s": round(time.perf_counter() - started, 1), "rss_mb": _rss_mb(pid)})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), max(1.0, seconds / 30))

    sampler = asyncio.create_task(sample())
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        lat, metas, errors, wall = await drive(_service_call(http, "llm"), bodies, 8, seconds)
    done.set()
    await sampler
    warm = [s["rss_mb"] for s in samples if s["t_s"] >= seconds / 10] or [s["rss_mb"] for s in samples]
    return {
        "seconds": round(wall, 1),
        **summary(lat, wall, errors, {"degraded": sum(1 for m in metas if m["degraded"])}),
        "rss_mb_first_after_warmup": warm[0],
        "rss_mb_last": warm[-1],
        "rss_mb_max": max(warm),
        "rss_samples": samples,
    }


async def _failures(service: ServiceProcess, bodies: list[dict[str, Any]], per_case: int) -> dict[str, Any]:
    out = {}
    for model in ("llm-failing", "llm-hanging"):
        async with httpx.AsyncClient(
            base_url=service.url, timeout=60, limits=httpx.Limits(max_connections=32)
        ) as http:
            lat, metas, errors, wall = await _drive_once(
                _service_call(http, model), (bodies * 10)[:per_case], 32
            )
        out[model] = summary(
            lat,
            wall,
            errors,
            {
                "sent": per_case,
                "answered_200": len(metas),
                "degraded": sum(1 for m in metas if m["degraded"]),
                "within_deadline_plus_1s": sum(1 for x in lat if x <= DEADLINE_S + 1.0),
                "server_latency_max_ms": max((m["latency_ms"] for m in metas), default=0.0),
            },
        )
        print(f"{model}: {out[model]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level-s", type=float, default=10.0, help="seconds of load per concurrency level")
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--failure-requests", type=int, default=256)
    parser.add_argument("--out", default="evals/bench/results/serve.json")
    args = parser.parse_args()
    bodies = dl19_bodies()
    judge = SimulatedJudge.from_trec(*(asset(p) for p in TREC_FILES["dl19"]))
    with (
        WireServer(judge, delay_s=LLM_LATENCY_S) as llm,
        WireServer(lambda request: Fault(500, "model down")) as failing,
        WireServer(lambda request: Hang(60)) as hanging,
        tempfile.TemporaryDirectory() as workdir,
    ):
        llm_spec = {"llm": "openai:m", "base_url": llm.openai_base_url, "strategy": "listwise"}
        local_spec = {"narrow_with": ["dense:"]}
        config: dict[str, Any] = {
            "default": "llm",
            "pipelines": {
                "llm": llm_spec,
                "local": local_spec,
                "llm-cached": llm_spec,
                "llm-failing": {**llm_spec, "base_url": failing.openai_base_url},
                "llm-hanging": {**llm_spec, "base_url": hanging.openai_base_url},
            },
            "limits": {"deadline_s": 30, "llm_concurrency": 128, "llm_queue": 256},
        }
        results: dict[str, Any] = {
            "what": f"{DOCS_PER_REQUEST} DL19 passages per request; LLM: listwise, one call, answered by a "
            f"local wire-format server after {int(LLM_LATENCY_S * 1000)} ms; local: the dense stage only",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "level_seconds": args.level_s,
        }
        # the uncached pipelines and the cached one are served by separate processes: one has no cache
        with ServiceProcess(config, Path(workdir)) as service:
            results["llm"] = asyncio.run(_levels(service, "llm", llm_spec, bodies, args.level_s))
            results["local"] = asyncio.run(_levels(service, "local", local_spec, bodies, args.level_s))
        cached = {**config, "cache_dir": str(Path(workdir) / "cache")}
        with ServiceProcess(cached, Path(workdir)) as service:
            results["cache"] = asyncio.run(_cache_effect(service, bodies))
            print("cache:", results["cache"], flush=True)
        failing_config = {**config, "limits": {**config["limits"], "deadline_s": DEADLINE_S}}
        with ServiceProcess(failing_config, Path(workdir)) as service:
            results["deadline_s"] = DEADLINE_S
            results["failures"] = asyncio.run(_failures(service, bodies, args.failure_requests))
        if args.soak_s > 0:
            with ServiceProcess(config, Path(workdir)) as service:
                results["soak"] = asyncio.run(_soak(service, bodies, args.soak_s))
                soak = {k: v for k, v in results["soak"].items() if k != "rss_samples"}
                print("soak:", soak, flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(_markdown(results))
    print(f"wrote {args.out}")


def _markdown(results: dict[str, Any]) -> str:
    lines = [f"# llmrerank serve under load\n\n{results['what']}. Machine: {results['machine']}.\n"]
    for pipeline in ("llm", "local"):
        lines += [
            f"\n## {pipeline}\n",
            "| clients | service rps | p50 ms | p95 ms | p99 ms | errors | library rps | library p50 ms | "
            "overhead ms (mean) | p50 ratio |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for level, row in results[pipeline].items():
            s, lib = row["service"], row["library"]
            cells = [level, s["throughput_rps"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["errors"]]
            cells += [lib["throughput_rps"], lib["p50_ms"], row["overhead_ms_mean"], row["latency_ratio_p50"]]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    cache = results["cache"]
    lines += [
        "\n## cache (8 clients, each DL19 query once, then again)\n",
        "; ".join(
            f"{phase}: p50 {cache[phase]['p50_ms']} ms, p99 {cache[phase]['p99_ms']} ms, "
            f"{cache[phase]['throughput_rps']} rps, cached calls {cache[phase]['cached_calls']}"
            for phase in ("cold", "warm")
        )
        + "\n",
        f"\n## LLM failing or hanging (deadline {results['deadline_s']} s, 32 clients)\n",
        "| case | sent | answered 200 | degraded | errors | within deadline+1s | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, row in results["failures"].items():
        lines.append(
            f"| {case} | {row['sent']} | {row['answered_200']} | {row['degraded']} | {row['errors']} | "
            f"{row['within_deadline_plus_1s']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} |"
        )
    if "soak" in results:
        soak = results["soak"]
        lines += [
            f"\n## soak ({soak['seconds']} s, 8 clients, LLM pipeline)\n",
            f"{soak['requests']} requests, {soak['errors']} errors, {soak['degraded']} degraded, "
            f"{soak['throughput_rps']} rps, p50 {soak['p50_ms']} ms, p99 {soak['p99_ms']} ms; service RSS "
            f"{soak['rss_mb_first_after_warmup']} MB after warm-up → {soak['rss_mb_last']} MB at the end "
            f"(max {soak['rss_mb_max']} MB)\n",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
