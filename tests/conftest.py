from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Haystack sends usage statistics to PostHog unless told not to; tests never reach the internet
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
# the offline datasets and models sit beside the repository (the Makefile sets the same)
os.environ.setdefault("LLMRERANK_ASSETS", str(Path(__file__).resolve().parents[2] / "shared" / "assets"))

from llmrerank.backends import Backend, OpenAIBackend
from llmrerank.backends.local import stop_shared_servers
from llmrerank.settings import TREC_FILES, asset
from llmrerank.testing import SimulatedJudge, WireServer

# every process this test run starts inherits this mark, and so do the processes they start,
# even once they are re-parented: the end-of-run check finds what was left running by it
SESSION_MARK = "LLMRERANK_TEST_SESSION"
os.environ[SESSION_MARK] = f"{os.getpid()}-{uuid.uuid4().hex}"

# helpers of the standard library that end when this process ends
EXPECTED_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
# processes that are stopping (a Ray node, a service after SIGTERM) get this long to be gone
STRAY_GRACE_S = 15.0


def _field(stat: str, index: int) -> str:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses
    return stat[stat.rindex(")") + 2 :].split()[index]


def processes_left_by_this_run() -> dict[int, str]:
    """pid -> command line of every live process carrying this run's mark, or a child of
    this process (one started with a clean environment), helpers of the stdlib apart."""
    mark = f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode()
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = (entry / "stat").read_text()
            if _field(stat, 0) in ("Z", "X"):  # exited, not running
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
        if mark not in environ and int(_field(stat, 1)) != me:
            continue
        if any(helper in command for helper in EXPECTED_HELPERS):
            continue
        found[int(entry.name)] = command
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Set up first, so torn down last: after every other fixture has stopped what it
    started. Fails the run (an error at teardown) if a process it started still runs."""
    yield
    stop_shared_servers()  # the local: servers, otherwise stopped at interpreter exit
    deadline = time.monotonic() + STRAY_GRACE_S
    left = processes_left_by_this_run()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_left_by_this_run()
    if not left:
        return
    for pid in left:  # do not let them outlive the run either
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    listing = "\n".join(f"  pid {pid}: {command}" for pid, command in sorted(left.items()))
    pytest.fail(f"the test run left {len(left)} process(es) running (now killed):\n{listing}", pytrace=False)


@dataclass(frozen=True)
class TrecQuery:
    qid: str
    query: str
    candidates: list[dict[str, str]]


def dense_sim_service(**limits: object) -> dict[str, Any]:
    """A service config with one pipeline: the dense stage narrows to 5, the simulated DL19
    judge grades them; ``limits`` as given."""
    return {
        "default": "dense-sim",
        "pipelines": {
            "dense-sim": {
                "narrow_with": ["dense:"],
                "narrow_to": 5,
                "llm": "sim:dl19",
                "strategy": "pointwise",
            }
        },
        "limits": limits,
    }


def load_trec(name: str) -> tuple[list[TrecQuery], dict[str, dict[str, int]]]:
    candidates_path, qrels_path = (asset(p) for p in TREC_FILES[name])
    qrels: dict[str, dict[str, int]] = {}
    for line in Path(qrels_path).read_text().splitlines():
        qid, _, docid, rel = line.split()
        qrels.setdefault(qid, {})[docid] = int(rel)
    queries = []
    for line in Path(candidates_path).read_text().splitlines():
        record = json.loads(line)
        queries.append(
            TrecQuery(
                record["qid"],
                record["query"],
                [{"id": c["docid"], "text": c["text"]} for c in record["candidates"]],
            )
        )
    return queries, qrels


@pytest.fixture(scope="session")
def dl19() -> tuple[list[TrecQuery], dict[str, dict[str, int]]]:
    return load_trec("dl19")


@pytest.fixture(scope="session")
def dl19_judge_server() -> Iterator[WireServer]:
    candidates_path, qrels_path = (asset(p) for p in TREC_FILES["dl19"])
    with WireServer(SimulatedJudge.from_trec(candidates_path, qrels_path)) as server:
        yield server


@pytest.fixture
def judge_backend(dl19_judge_server: WireServer) -> Iterator[Backend]:
    with OpenAIBackend("judge", base_url=dl19_judge_server.openai_base_url) as backend:
        yield backend


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export cache for the session: each offline model is exported once."""
    return tmp_path_factory.mktemp("onnx-exports")
