"""Cold start: a one-query CLI dense rerank, and a service worker's time to ready.

Each measurement is a fresh process, as a shell user, a service worker or a serverless
function pays it on every start:

1. ``llmrerank rerank --narrow-with dense: -i one.jsonl``: one DL19 query with its 100 BM25
   candidates, the ONNX export already cached and every passage embedding already in the
   response cache (filled by ``llmrerank index`` first), so the process encodes only the
   query. Wall time from before the process starts to its exit.
2. ``llmrerank serve`` with a dense-only pipeline: wall time from before the process starts
   to the first ``200`` from ``/readyz`` (polled every 10 ms), then one ``/v1/rerank``
   request (the same query) and a SIGTERM.

The CLI's CPU seconds (user + system, all threads) are recorded beside its wall time: on a
shared machine they move far less than wall time. Two processes that only import (the
package and its CLI; then also numpy, onnxruntime and tokenizers) split that time.

Every process also reports which heavy modules it imported (the CLI through an ``atexit``
hook; the service through the shared libraries mapped in ``/proc/PID/maps``, read before
it is stopped). ``--checkout NAME=PATH`` (repeatable) times another checkout of the
project with the same Python, e.g. ``--checkout before=/path/to/main``; runs of the
checkouts are interleaved so that load from other processes hits them alike. Each
checkout gets its own ONNX export folder and response cache.

    python evals/bench/bench_cold_start.py [--runs 7] [--checkout NAME=PATH ...] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llmrerank.host import host_cpu

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "sentence_transformers", "onnx")
# run the CLI as its console script does, and report the heavy modules it imported on exit
CLI = (
    "import atexit, json, sys\n"
    f"HEAVY = {HEAVY!r}\n"
    "atexit.register(lambda: print('HEAVY=' + json.dumps([m for m in HEAVY if m in sys.modules]),"
    " file=sys.stderr))\n"
    "from llmrerank.cli import main\n"
    "main()\n"
)
# processes that only import, to split the CLI's time: the package and its CLI, then also
# what the ONNX path adds
PROBES = {
    "llmrerank.cli": "llmrerank.cli",
    "llmrerank.cli + numpy, onnxruntime, tokenizers": "llmrerank.cli, numpy, onnxruntime, tokenizers",
}
# a shared library each heavy package maps when it is imported
HEAVY_LIBRARIES = {"torch": "libtorch_cpu", "onnx": "onnx_cpp2py_export"}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def commit_of(path: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Checkout:
    """One checkout of the project with its own export folder and response cache."""

    def __init__(self, name: str, path: Path, workdir: Path) -> None:
        self.name = name
        self.path = path
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.cache_dir = self.workdir / "cache"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(path),
            "LLMRERANK_ONNX_CACHE": str(self.workdir / "onnx"),
            "HF_HUB_OFFLINE": "1",
        }

    def cli(self, *args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
        with (stdin or Path(os.devnull)).open("rb") as source:
            return subprocess.run(
                [sys.executable, "-c", CLI, *args],
                stdin=source,
                capture_output=True,
                env=self.env,
                cwd=self.workdir,
                check=False,
                text=True,
            )


def heavy_from_stderr(stderr: str) -> list[str]:
    for line in stderr.splitlines():
        if line.startswith("HEAVY="):
            found: list[str] = json.loads(line[len("HEAVY=") :])
            return found
    raise RuntimeError(f"the CLI did not report its imports:\n{stderr}")


def set_up(checkout: Checkout, request: Path) -> dict[str, Any]:
    """Export the model and fill the embedding cache (``llmrerank index``): not timed."""
    started = time.perf_counter()
    done = checkout.cli("index", str(request), "--cache-dir", str(checkout.cache_dir))
    if done.returncode:
        raise RuntimeError(f"{checkout.name}: llmrerank index failed:\n{done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["wall_s"] = round(time.perf_counter() - started, 2)
    return summary


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_probe(checkout: Checkout, modules: str) -> dict[str, float]:
    """Wall and CPU seconds of a process that only imports ``modules``."""
    cpu = children_cpu_s()
    started = time.perf_counter()
    # run in the checkout's work folder: ``-c`` puts the current folder first on sys.path
    subprocess.run(
        [sys.executable, "-c", f"import {modules}"], env=checkout.env, cwd=checkout.workdir, check=True
    )
    return {"wall_s": round(time.perf_counter() - started, 3), "cpu_s": round(children_cpu_s() - cpu, 3)}


def cli_rerank(checkout: Checkout, request: Path) -> dict[str, Any]:
    cpu = children_cpu_s()
    started = time.perf_counter()
    done = checkout.cli(
        "rerank", "--narrow-with", "dense:", "--cache-dir", str(checkout.cache_dir), "-i", str(request)
    )
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{checkout.name}: llmrerank rerank failed:\n{done.stderr}")
    ranking = json.loads(done.stdout)
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(children_cpu_s() - cpu, 3),
        "heavy_imported": heavy_from_stderr(done.stderr),
        "top10": [item["id"] for item in ranking["ranking"][:10]],
    }


def mapped_heavy_libraries(pid: int) -> list[str]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ["unknown (no /proc)"]
    return [name for name, library in HEAVY_LIBRARIES.items() if library in maps]


def serve_ready(checkout: Checkout, query: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    port = free_port()
    config = checkout.workdir / "service.yaml"
    config.write_text(
        json.dumps(
            {
                "default": "dense-only",
                "cache_dir": str(checkout.cache_dir),
                "pipelines": {"dense-only": {"narrow_with": ["dense:"]}},
            }
        )
    )
    url = f"http://127.0.0.1:{port}"
    log = (checkout.workdir / f"serve-{port}.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--config", str(config), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=checkout.env,
        cwd=checkout.workdir,
    )
    try:
        ready_s = None
        while time.perf_counter() - started < timeout_s:
            if process.poll() is not None:
                raise RuntimeError(f"{checkout.name}: llmrerank serve exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        ready_s = time.perf_counter() - started
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        if ready_s is None:
            raise RuntimeError(f"{checkout.name}: not ready in {timeout_s} s")
        body = json.dumps({"query": query["query"], "documents": query["documents"], "top_n": 10}).encode()
        first = time.perf_counter()
        request = urllib.request.Request(
            f"{url}/v1/rerank", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        first_request_s = time.perf_counter() - first
        heavy = mapped_heavy_libraries(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    return {
        "ready_s": round(ready_s, 3),
        "first_request_s": round(first_request_s, 3),
        "heavy_mapped": heavy,
        "top10": [query["ids"][r["index"]] for r in answer["results"][:10]],
    }


def one_query(query_index: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from llmrerank.settings import TREC_FILES, asset

    lines = asset(TREC_FILES["dl19"][0]).read_text().splitlines()
    record = json.loads(lines[query_index])
    candidates = [{"id": c["docid"], "text": c["text"]} for c in record["candidates"]]
    return {
        "qid": record["qid"],
        "query": record["query"],
        "candidates": candidates,
        "documents": [c["text"] for c in candidates],
        "ids": [c["id"] for c in candidates],
    }


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="Fresh processes per measurement and checkout.")
    parser.add_argument(
        "--query", type=int, default=0, help="Which DL19 query (line of the candidates file)."
    )
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="A checkout to time (repeatable); default: this one, as 'this'.",
    )
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--out", default=str(ROOT / "evals/bench/results/cold_start.json"))
    args = parser.parse_args()

    query = one_query(args.query)
    named = [spec.split("=", 1) for spec in args.checkout] or [["this", str(ROOT)]]
    workdir = Path(tempfile.mkdtemp(prefix="llmrerank-cold-"))
    checkouts = [Checkout(name, Path(path).resolve(), workdir) for name, path in named]
    request = workdir / "one.jsonl"
    request.write_text(json.dumps({"query": query["query"], "candidates": query["candidates"]}) + "\n")

    result: dict[str, Any] = {
        "args": vars(args),
        "machine": {
            "cpu": host_cpu(),
            "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load_average(),
        },
        "query": {"qid": query["qid"], "candidates": len(query["candidates"])},
        "checkouts": {c.name: {"path": str(c.path), "commit": commit_of(c.path)} for c in checkouts},
    }
    for checkout in checkouts:
        result["checkouts"][checkout.name]["set_up"] = set_up(checkout, request)
        print(json.dumps({checkout.name: result["checkouts"][checkout.name]}), flush=True)

    cli_runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in checkouts}
    serve_runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in checkouts}
    probes: dict[str, dict[str, list[dict[str, float]]]] = {
        c.name: {k: [] for k in PROBES} for c in checkouts
    }
    loads: list[list[float]] = []
    for run in range(args.runs):
        for checkout in checkouts:  # interleaved: load from other jobs hits every checkout alike
            loads.append(load_average())
            cli_runs[checkout.name].append(cli_rerank(checkout, request))
            for label, modules in PROBES.items():
                probes[checkout.name][label].append(import_probe(checkout, modules))
            if not args.skip_serve:
                serve_runs[checkout.name].append(serve_ready(checkout, query, args.ready_timeout))
            print(
                json.dumps(
                    {
                        "run": run,
                        "checkout": checkout.name,
                        "cli": cli_runs[checkout.name][-1]["wall_s"],
                        "ready": serve_runs[checkout.name][-1]["ready_s"]
                        if serve_runs[checkout.name]
                        else None,
                        "load": loads[-1],
                    }
                ),
                flush=True,
            )

    for checkout in checkouts:
        entry = result["checkouts"][checkout.name]
        runs = cli_runs[checkout.name]
        entry["cli_rerank"] = {
            "wall_s": summarise([r["wall_s"] for r in runs]),
            "cpu_s": summarise([r["cpu_s"] for r in runs]),
            "runs_s": [r["wall_s"] for r in runs],
            "heavy_imported": sorted({m for r in runs for m in r["heavy_imported"]}),
            "top10": runs[0]["top10"],
            "same_top10_every_run": all(r["top10"] == runs[0]["top10"] for r in runs),
        }
        entry["imports_alone"] = {
            label: {
                "wall_s": summarise([r["wall_s"] for r in runs_of]),
                "cpu_s": summarise([r["cpu_s"] for r in runs_of]),
            }
            for label, runs_of in probes[checkout.name].items()
        }
        if serve_runs[checkout.name]:
            served = serve_runs[checkout.name]
            entry["serve"] = {
                "ready_s": summarise([r["ready_s"] for r in served]),
                "runs_ready_s": [r["ready_s"] for r in served],
                "first_request_s": summarise([r["first_request_s"] for r in served]),
                "heavy_mapped": sorted({m for r in served for m in r["heavy_mapped"]}),
                "top10_equals_cli": all(r["top10"] == runs[0]["top10"] for r in served),
            }
    tops = [result["checkouts"][c.name]["cli_rerank"]["top10"] for c in checkouts]
    result["same_top10_across_checkouts"] = all(t == tops[0] for t in tops)
    result["machine"]["load_average_during_runs"] = {
        "min_1min": min(x[0] for x in loads),
        "median_1min": statistics.median(x[0] for x in loads),
        "max_1min": max(x[0] for x in loads),
    }
    result["machine"]["load_average_at_end"] = load_average()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {
                c.name: {k: v for k, v in result["checkouts"][c.name].items() if k != "set_up"}
                for c in checkouts
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
