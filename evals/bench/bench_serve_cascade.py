"""Load on ``llmrerank serve`` with cascade pipelines (the dense stage first, then the LLM)
whose LLM hangs or fails: at 1, 8, 32 and 64 concurrent clients, is every ``200`` on time
(deadline + 1 s), is everything else a ``429`` with ``Retry-After``, is nothing a ``5xx``;
then SIGTERM with 64 clients in flight: how is every request answered.

One real ``llmrerank serve`` process (one worker) serves two pipelines, dense → 20 →
listwise LLM, whose LLM is a local wire-format server that hangs (``Hang``) or answers
``500`` (``Fault``); 10 DL19 passages a request (``bench_serve.dl19_bodies``); deadline
1 s; the local gate (``local_concurrency``/``local_queue``) and the LLM gate at their
defaults. Closed-loop clients (``bench_serve.drive``): each sends its next request when the
last is answered, after waiting the ``Retry-After`` of a ``429``; one more case at 64
clients (hanging LLM) retries every ``429`` at once, the worst a client can do. The clients
and both LLM stand-ins run in this process, the service in its own; the cores each kept
busy are recorded per case, since on a small machine they compete.

    python evals/bench/bench_serve_cascade.py [--level-s 10] [--levels 1,8,32,64] \\
        [--sigterm-after-s 3] [--out evals/bench/results/serve_cascade.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from bench_serve import DEADLINE_S, DOCS_PER_REQUEST, dl19_bodies, drive, summary

from llmrerank.host import host_cpu
from llmrerank.serve.config import Limits
from llmrerank.serve.process import ServiceProcess
from llmrerank.testing import Fault, Hang, WireServer

LEVELS = (1, 8, 32, 64)
SIGTERM_CLIENTS = 64
ON_TIME_S = DEADLINE_S + 1.0
# the Done-means of issue 26: this share of 200s on time, 0 5xx, the rest 429 with Retry-After
ON_TIME_BAR = 0.99
STRESS_CASE = "hanging, 429 retried at once"
WAITING, AT_ONCE = "clients wait Retry-After", "clients retry 429 at once"
#: in a degraded reason: the deadline passed before the LLM stage began
LLM_NOT_REACHED = "passed before the LLM stage"

Call = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _cascade(base_url: str) -> dict[str, Any]:
    return {
        "narrow_with": ["dense:"],
        "narrow_to": 20,
        "llm": "openai:m",
        "base_url": base_url,
        "strategy": "listwise",
    }


def _shell(command: str) -> str:
    return subprocess.run(command, shell=True, capture_output=True, text=True, check=False).stdout.strip()


def _machine() -> dict[str, Any]:
    return {
        "cpu": host_cpu(),
        "cpus": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }


def _reason_kind(reason: str | None) -> str:
    """A degraded reason with its numbers taken out, so equal reasons count together."""
    return re.sub(r"\d+(\.\d+)?", "N", reason) if reason else "(none)"


def _recording_call(
    http: httpx.AsyncClient, model: str, records: list[dict[str, Any]], *, ends: float, wait_retry_after: bool
) -> Call:
    """One request, recorded whatever comes back (status, JSON or not, ``Retry-After``,
    latency, degraded reason, connection error); never raises. After a ``429`` it waits the
    ``Retry-After`` (at most until ``ends``) when ``wait_retry_after``."""

    async def call(body: dict[str, Any]) -> dict[str, Any]:
        sent = time.perf_counter()
        record: dict[str, Any] = {
            "sent": sent,
            "sent_wall": time.time(),
            "id": f"bench-{len(records)}-{id(body)}-{sent}",
        }
        try:
            reply = await http.post(
                "/v1/rerank", json={"model": model, **body}, headers={"x-request-id": record["id"]}
            )
        except httpx.HTTPError as exc:
            record.update(done=time.perf_counter(), status=None, error=f"{type(exc).__name__}: {exc}")
            records.append(record)
            return record
        done = time.perf_counter()
        record["done_wall"] = time.time()
        is_json = reply.headers.get("content-type", "").startswith("application/json")
        answer = reply.json() if is_json else None
        record.update(
            done=done,
            latency_s=done - sent,
            status=reply.status_code,
            json=is_json,
            retry_after=reply.headers.get("retry-after"),
        )
        if reply.status_code == 200 and answer is not None:
            meta = answer["meta"]
            record.update(
                degraded=meta["degraded"], reason=meta["degraded_reason"], server_ms=meta["latency_ms"]
            )
        elif answer is not None:
            record["message"] = answer.get("message")
        else:
            record["text"] = reply.text[:200]
        records.append(record)
        if reply.status_code == 429 and wait_retry_after and record["retry_after"]:
            await asyncio.sleep(max(0.0, min(float(record["retry_after"]), ends - time.perf_counter())))
        return record

    return call


def _outside_handler(served: list[dict[str, Any]], logged: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Where a 200's time went outside the service's handler, from the access log (its
    ``ts`` is when the handler finished, ``latency_ms`` how long it ran): before it began
    (sending, the server's queue) and after it finished (the answer's way back, this
    process's event loop); median and max, ms."""
    before, after = [], []
    for r in served:
        entry = logged.get(r["id"])
        if entry is not None:
            before.append(entry["ts"] - entry["latency_ms"] / 1000 - r["sent_wall"])
            after.append(r["done_wall"] - entry["ts"])
    if not before:
        return {}
    return {
        "before_p50_ms": round(1000 * statistics.median(before), 1),
        "before_max_ms": round(1000 * max(before), 1),
        "after_p50_ms": round(1000 * statistics.median(after), 1),
        "after_max_ms": round(1000 * max(after), 1),
    }


def _tally(records: list[dict[str, Any]], wall_s: float, logged: dict[str, dict[str, Any]]) -> dict[str, Any]:
    served = [r for r in records if r["status"] == 200]
    refused = [r for r in records if r["status"] == 429]
    latencies = [r["latency_s"] for r in served]
    on_time = sum(1 for x in latencies if x <= ON_TIME_S)
    by_gate = Counter(
        "local (CPU) gate" if "local (CPU)" in (r.get("message") or "") else "LLM gate" for r in refused
    )
    lat = summary(latencies, wall_s, 0)
    return {
        "sent": len(records),
        "ok_200": len(served),
        "degraded_200": sum(1 for r in served if r.get("degraded")),
        # the 200s whose request reached the LLM stage (the rest spent the deadline on the dense stage)
        "llm_reached_200": sum(1 for r in served if LLM_NOT_REACHED not in (r.get("reason") or "")),
        "rejected_429": len(refused),
        "rejected_429_with_retry_after": sum(1 for r in refused if r["retry_after"]),
        "rejected_429_by_gate": dict(by_gate),
        "server_5xx": sum(1 for r in records if r["status"] is not None and r["status"] >= 500),
        "other_status": sum(1 for r in records if r["status"] not in (None, 200, 429) and r["status"] < 500),
        "connection_errors": sum(1 for r in records if r["status"] is None),
        "on_time_200": on_time,
        "on_time_share": round(on_time / len(served), 4) if served else None,
        "ok_200_rps": lat["throughput_rps"],
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "max_ms": lat["max_ms"],
        "server_latency_max_ms": max((r["server_ms"] for r in served), default=0.0),
        "outside_handler": _outside_handler(served, logged),
        "degraded_reasons": dict(Counter(_reason_kind(r.get("reason")) for r in served).most_common()),
        "errors_seen": dict(Counter(r["error"].split(":")[0] for r in records if r["status"] is None)),
    }


async def _level(
    service: ServiceProcess,
    model: str,
    bodies: list[dict[str, Any]],
    clients: int,
    seconds: float,
    wait: bool,
) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    assert service.process is not None
    service_cpu, own_cpu = _group_cpu_s(service.process.pid), _own_cpu_s()
    async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
        call = _recording_call(
            http, model, records, ends=time.perf_counter() + seconds, wait_retry_after=wait
        )
        _, _, _, wall = await drive(call, bodies, clients, seconds)
    return {
        **_tally(records, wall, _access_log(service.log())),
        # cores kept busy: the service, and this process (clients and LLM stand-ins)
        "service_cores": round((_group_cpu_s(service.process.pid) - service_cpu) / wall, 2),
        "bench_cores": round((_own_cpu_s() - own_cpu) / wall, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _group_cpu_s(group: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``group``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp; utime and stime follow at fields 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def _sigterm(
    service: ServiceProcess, model: str, bodies: list[dict[str, Any]], after_s: float, wait: bool
) -> dict[str, Any]:
    """``SIGTERM_CLIENTS`` clients against ``model``; SIGTERM after ``after_s``; a client
    stops at its first connection error once the shutdown began (the service no longer
    accepts), or 60 s after the SIGTERM. Every answer is classified."""
    records: list[dict[str, Any]] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=SIGTERM_CLIENTS, max_keepalive_connections=SIGTERM_CLIENTS)
    sigterm_at = 0.0

    async def terminate_later() -> tuple[int, float]:
        """The exit code, and the seconds from the SIGTERM to the service's exit."""
        nonlocal sigterm_at
        await asyncio.sleep(after_s)
        sigterm_at = time.perf_counter()
        service.terminate()
        code = await asyncio.to_thread(service.wait_exit, 60)
        return code, time.perf_counter() - sigterm_at

    async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
        inner = _recording_call(
            http, model, records, ends=time.perf_counter() + after_s + 60, wait_retry_after=wait
        )

        async def call(body: dict[str, Any]) -> dict[str, Any]:
            record = await inner(body)
            if record["status"] is None and sigterm_at:
                stop.set()
            return record

        killer = asyncio.ensure_future(terminate_later())
        await drive(call, bodies, SIGTERM_CLIENTS, after_s + 60, stop=stop)
        code, exited_s = await killer
    return _classify_shutdown(records, sigterm_at, code, exited_s, service.log())


def _classify_shutdown(
    records: list[dict[str, Any]], sigterm_at: float, code: int, exited_s: float, log: str
) -> dict[str, Any]:
    def kind(r: dict[str, Any]) -> str:
        if r["status"] is None:
            return (
                "connection error after shutdown began"
                if r["done"] >= sigterm_at
                else "connection error before"
            )
        if r["status"] == 200:
            return "200 JSON" if r["json"] else "200 not JSON"
        if r["status"] == 429:
            return (
                "429 JSON with Retry-After" if r["json"] and r["retry_after"] else "429 without Retry-After"
            )
        if r["status"] == 503 and r["json"] and r["retry_after"]:
            return "503 JSON with Retry-After"
        if r["status"] >= 500:
            return "5xx JSON" if r["json"] else "plain-text 5xx"
        return f"other {r['status']}"

    logged = {request_id: line["status"] for request_id, line in _access_log(log).items()}
    in_flight = [r for r in records if r["sent"] < sigterm_at <= r["done"]]
    after = [r for r in records if r["done"] >= sigterm_at]
    return {
        "clients": SIGTERM_CLIENTS,
        "answer_kinds": dict(Counter(kind(r) for r in records).most_common()),
        "answers_after_sigterm": dict(Counter(kind(r) for r in after).most_common()),
        "in_flight_at_sigterm": len(in_flight),
        "in_flight_answers": dict(Counter(kind(r) for r in in_flight).most_common()),
        "in_flight_200_on_time": sum(
            1 for r in in_flight if r["status"] == 200 and r["latency_s"] <= ON_TIME_S
        ),
        "in_flight_200_max_ms": round(
            1000 * max((r["latency_s"] for r in in_flight if r["status"] == 200), default=0.0), 1
        ),
        "sent_after_sigterm": sum(1 for r in records if r["sent"] >= sigterm_at),
        # a connection error for a request the service had seen (logged) would be an answer lost
        "connection_errors_the_service_logged": sum(
            1 for r in records if r["status"] is None and r["id"] in logged
        ),
        "answers_matching_access_log": sum(
            1 for r in records if r["status"] is not None and logged.get(r["id"]) == r["status"]
        ),
        "http_answers": sum(1 for r in records if r["status"] is not None),
        "exit_code": code,
        "exit_after_sigterm_s": round(exited_s, 2),
        "plain_text_500_in_log": log.count("Internal Server Error"),
        "cancelled_by_shutdown_in_log": log.count("cancelled by the server's shutdown"),
    }


def _access_log(log: str) -> dict[str, dict[str, Any]]:
    """request id -> its line of the service's JSON access log."""
    lines = {}
    for line in log.splitlines():
        if line.startswith("{") and '"event":"request"' in line:
            record = json.loads(line)
            lines[record["request_id"]] = record
    return lines


def _bar(results: dict[str, Any]) -> dict[str, Any]:
    """The Done-means of issue 26 at 64 clients with the hanging LLM, and across SIGTERM."""
    row = results["cases"]["hanging"].get("64")
    if row is None:
        return {"measured": False}
    kinds = {kind for run in results["sigterm"].values() for kind in run["answer_kinds"]}
    lost = sum(run["connection_errors_the_service_logged"] for run in results["sigterm"].values())
    allowed = {"200 JSON", "429 JSON with Retry-After", "connection error after shutdown began"}
    return {
        "on_time_share_64_hanging": row["on_time_share"],
        "on_time_met": row["on_time_share"] is not None and row["on_time_share"] >= ON_TIME_BAR,
        "rest_429_with_retry_after": row["sent"] == row["ok_200"] + row["rejected_429_with_retry_after"],
        "no_5xx": row["server_5xx"] == 0 and not any("5xx" in k or "503" in k for k in kinds),
        "sigterm_only_allowed_answers": kinds <= allowed,
        "sigterm_no_logged_request_lost": lost == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level-s", type=float, default=10.0, help="seconds of load per concurrency level")
    parser.add_argument("--sigterm-after-s", type=float, default=3.0, help="load before the SIGTERM")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="client counts, comma-separated")
    parser.add_argument(
        "--drain-s", type=float, help="the service's limits.drain_s (default: the service's default)"
    )
    parser.add_argument("--out", default="evals/bench/results/serve_cascade.json")
    args = parser.parse_args()
    bodies = dl19_bodies()
    uptime_before = _shell("uptime")
    defaults = Limits()
    drain_s = defaults.drain_s if args.drain_s is None else args.drain_s
    results: dict[str, Any] = {
        "what": f"{DOCS_PER_REQUEST} DL19 passages per request; pipelines dense → 20 → listwise LLM "
        "(openai wire format), the LLM a local server that hangs (Hang 60 s) or answers 500; one "
        f"`llmrerank serve` process, one worker; deadline {DEADLINE_S:g} s; closed-loop clients"
        + "; after a 429 a client waits its Retry-After (capped at the level's end), except in the "
        "case named 'retried at once', where it sends its next request at once",
        "limits": {
            "deadline_s": DEADLINE_S,
            "local_concurrency": defaults.local_concurrency,
            "local_queue": defaults.local_queue,
            "llm_concurrency": defaults.llm_concurrency,
            "llm_queue": defaults.llm_queue,
            "drain_s": drain_s,
            "why": "the defaults (deadline and --drain-s aside): what a service gets without tuning",
        },
        "machine": _machine(),
        "command": " ".join(["python", *sys.argv]),
        "level_seconds": args.level_s,
        "uptime_before": uptime_before,
        "cases": {},
    }
    with (
        WireServer(lambda request: Hang(60)) as hanging,
        WireServer(lambda request: Fault(500, "model down")) as failing,
        tempfile.TemporaryDirectory() as workdir,
    ):
        config = {
            "default": "cascade-hanging",
            "pipelines": {
                "cascade-hanging": _cascade(hanging.openai_base_url),
                "cascade-failing": _cascade(failing.openai_base_url),
            },
            "limits": {"deadline_s": DEADLINE_S, "drain_s": drain_s},
        }
        with ServiceProcess(config, Path(workdir)) as service:
            for case in ("hanging", "failing"):
                rows = results["cases"].setdefault(case, {})
                for clients in (int(n) for n in args.levels.split(",")):
                    row = asyncio.run(_level(service, f"cascade-{case}", bodies, clients, args.level_s, True))
                    rows[str(clients)] = row
                    print(f"{case} c={clients}: {row}", flush=True)
                    time.sleep(1.0)  # what the last level left running (a dense stage) finishes
            stress = asyncio.run(
                _level(service, "cascade-hanging", bodies, SIGTERM_CLIENTS, args.level_s, False)
            )
            results["cases"][STRESS_CASE] = {str(SIGTERM_CLIENTS): stress}
            print(f"{STRESS_CASE}: {stress}", flush=True)
            time.sleep(1.0)
            results["sigterm"] = {
                WAITING: asyncio.run(_sigterm(service, "cascade-hanging", bodies, args.sigterm_after_s, True))
            }
            print(f"sigterm, {WAITING}:", results["sigterm"][WAITING], flush=True)
        # the same, against a fresh service, with clients that retry every 429 at once
        with ServiceProcess(config, Path(workdir)) as service:
            run = asyncio.run(_sigterm(service, "cascade-hanging", bodies, args.sigterm_after_s, False))
            results["sigterm"][AT_ONCE] = run
            print(f"sigterm, {AT_ONCE}:", run, flush=True)
    results["uptime_after"] = _shell("uptime")
    results["bar"] = _bar(results)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(results))
    print(f"wrote {args.out}; bar: {results['bar']}")


def markdown(results: dict[str, Any]) -> str:
    """The results as the tables of ``results/serve_cascade.md``."""
    limits = results["limits"]
    lines = [
        "# llmrerank serve under load: cascade pipelines, LLM hanging or failing\n",
        f"{results['what']}. Limits: deadline_s {limits['deadline_s']}, local_concurrency "
        f"{limits['local_concurrency']}, local_queue {limits['local_queue']}, llm_concurrency "
        f"{limits['llm_concurrency']}, llm_queue {limits['llm_queue']} ({limits['why']}). "
        f"{results['level_seconds']:g} s per level.\n",
        f"Machine: {results['machine']}. `uptime` before: `{results['uptime_before']}`; "
        f"after: `{results['uptime_after']}`. Command: `{results['command']}`.\n",
        "| LLM | clients | sent | 200 | degraded 200 | 200 that reached the LLM | 429 (with Retry-After) | "
        "5xx | other errors | "
        f"200 within {ON_TIME_S:g} s | p50 ms | p99 ms | max ms | server max ms | 200/s | "
        "cores: service / bench | load avg after |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    reasons, timing = [], []
    for case, rows in results["cases"].items():
        for clients, r in rows.items():
            share = (
                "–"
                if r["on_time_share"] is None
                else f"{r['on_time_200']} ({100 * r['on_time_share']:.1f} %)"
            )
            cells = [
                case,
                clients,
                r["sent"],
                r["ok_200"],
                r["degraded_200"],
                r["llm_reached_200"],
                f"{r['rejected_429']} ({r['rejected_429_with_retry_after']})",
                r["server_5xx"],
                r["other_status"] + r["connection_errors"],
                share,
                r["p50_ms"],
                r["p99_ms"],
                r["max_ms"],
                r["server_latency_max_ms"],
                r["ok_200_rps"],
                f"{r['service_cores']} / {r['bench_cores']}",
                r["load_average_after"],
            ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
            gates = ", ".join(f"{n} at the {gate}" for gate, n in r["rejected_429_by_gate"].items())
            why = "; ".join(f"{n}× {reason}" for reason, n in r["degraded_reasons"].items())
            outside = r["outside_handler"]
            if outside:
                timing.append(
                    f"* {case}, {clients} clients: before the handler p50 {outside['before_p50_ms']} ms, max "
                    f"{outside['before_max_ms']} ms; after it p50 {outside['after_p50_ms']} ms, max "
                    f"{outside['after_max_ms']} ms"
                )
            reasons.append(
                f"* {case}, {clients} clients: {why or 'no 200'}" + (f" (429s: {gates})" if gates else "")
            )
    lines += [
        "\nDegraded reasons (numbers replaced by N):\n",
        *reasons,
        "\nA 200's time outside the service's handler (access log against the client's clock): "
        "before the handler began (sending, the server's queue) and after it ended (the way back, "
        "the clients' event loop):\n",
        *timing,
    ]
    for clients_do, sig in results["sigterm"].items():
        lines += _sigterm_markdown(clients_do, sig)
    bar = results["bar"]
    lines.append(f"\nIssue 26's bar (64 clients, hanging LLM, and across the SIGTERM): {bar}\n")
    return "\n".join(lines)


def _sigterm_markdown(clients_do: str, sig: dict[str, Any]) -> list[str]:
    lines = [
        f"\n## SIGTERM with {sig['clients']} clients in flight (hanging LLM; {clients_do})\n",
        "| answer | all | after the SIGTERM | requests in flight at the SIGTERM |",
        "|---|--:|--:|--:|",
    ]
    for kind, n in sig["answer_kinds"].items():
        after, in_flight = sig["answers_after_sigterm"].get(kind, 0), sig["in_flight_answers"].get(kind, 0)
        lines.append(f"| {kind} | {n} | {after} | {in_flight} |")
    lines.append(
        f"\n{sig['in_flight_at_sigterm']} requests in flight at the SIGTERM; "
        f"{sig['in_flight_200_on_time']} of their 200s within {ON_TIME_S:g} s (slowest "
        f"{sig['in_flight_200_max_ms']} ms); {sig['sent_after_sigterm']} sent after it. The service exited "
        f"with code {sig['exit_code']} {sig['exit_after_sigterm_s']} s after the SIGTERM; its log has "
        f"{sig['plain_text_500_in_log']} plain-text 500s and {sig['cancelled_by_shutdown_in_log']} requests "
        f"cancelled by the shutdown. {sig['answers_matching_access_log']} of {sig['http_answers']} HTTP "
        "answers are in the access log with the status the client saw; "
        f"{sig['connection_errors_the_service_logged']} connection errors were for a request the "
        "service had logged.\n"
    )
    return lines


if __name__ == "__main__":
    main()
