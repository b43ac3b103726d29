import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmrerank import DiskCache, UserError
from llmrerank._readonly_cache import ReadOnlyStore
from llmrerank.cache import request_key
from llmrerank.errors import CacheError
from llmrerank.rerankers.llm import LLMReranker
from llmrerank.settings import TREC_FILES, asset
from llmrerank.testing import FunctionBackend

LLMRERANK = str(Path(sys.executable).parent / "llmrerank")
DL19 = Path(asset(TREC_FILES["dl19"][0]))


def test_key_is_canonical_and_sensitive_to_content() -> None:
    a = request_key({"model": "m", "messages": [{"role": "user", "content": "x"}], "t": 0})
    b = request_key({"t": 0, "messages": [{"content": "x", "role": "user"}], "model": "m"})
    c = request_key({"model": "m", "messages": [{"role": "user", "content": "y"}], "t": 0})
    assert a == b != c
    assert len(a) == 64


def test_modes(tmp_path: Path) -> None:
    DiskCache(tmp_path).set("responses", "k", "v1")
    assert DiskCache(tmp_path, mode="read_only").get("responses", "k") == "v1"
    DiskCache(tmp_path, mode="read_only").set("responses", "k", "nope")
    assert DiskCache(tmp_path).get("responses", "k") == "v1"
    refresh = DiskCache(tmp_path, mode="refresh")
    assert refresh.get("responses", "k") is None
    refresh.set("responses", "k", "v2")
    assert DiskCache(tmp_path).get("responses", "k") == "v2"
    off = DiskCache(tmp_path, mode="off")
    assert off.get("responses", "k") is None
    with pytest.raises(UserError, match="unknown cache mode"):
        DiskCache(tmp_path, mode="sometimes")


def test_namespaces_stats_and_clear(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.namespace("responses").set("a", "1")
    cache.namespace("embeddings").set("b", b"\x00\x01")
    assert cache.namespace("embeddings").get("b") == b"\x00\x01"
    stats = cache.stats()
    assert stats["namespaces"] == {"responses": 1, "embeddings": 1}
    assert cache.clear("embeddings") == 1
    assert cache.stats()["entries"] == 1


def test_shared_between_processes(tmp_path: Path) -> None:
    code = (
        "import sys; from llmrerank import DiskCache; "
        "DiskCache(sys.argv[1]).set('responses', 'key', 'from child')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert DiskCache(tmp_path).get("responses", "key") == "from child"


def _corrupt(path: Path) -> Path:
    path.mkdir()
    (path / "cache.db").write_bytes(b"not a database " * 500)
    return path


def _truncated(path: Path) -> Path:
    cache = DiskCache(path)
    for i in range(200):
        cache.set("responses", f"k{i}", "v" * 2000)
    cache.close()
    database = path / "cache.db"
    with database.open("r+b") as handle:
        handle.truncate(database.stat().st_size // 2)
    return path


def _a_file(path: Path) -> Path:
    path.write_text("a file where the cache directory should be")
    return path


@pytest.mark.parametrize("make", [_corrupt, _truncated, _a_file], ids=["corrupt", "truncated", "file"])
def test_an_unusable_cache_is_bypassed_with_one_warning_and_reranking_goes_on(
    tmp_path: Path, make: Callable[[Path], Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmrerank"):
        cache = DiskCache(make(tmp_path / "cache"))
        backend = FunctionBackend(lambda request: '{"grade": 2}')
        reranker = LLMReranker(backend, cache=cache)
        for _ in range(2):
            assert len(reranker.rerank("q", ["one", "two", "three"])) == 3
    assert cache.degraded_reason is not None
    assert "bypassed" in cache.degraded_reason
    assert len(backend.requests) == 6  # nothing cached, nothing failed
    assert [r.getMessage() for r in caplog.records] == [cache.degraded_reason]
    with pytest.raises(CacheError, match="bypassed"):
        cache.stats()


def test_a_pickled_entry_is_never_loaded_from_a_read_only_store(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache._store.set("responses:k", {"not": "json"})  # written by something else
    cache._store.set("responses:ok", "fine")
    cache.close()
    store = ReadOnlyStore(tmp_path)
    assert store.get("responses:ok") == "fine"
    assert not isinstance(store.get("responses:k"), dict)
    assert store.get("responses:missing") is None


# -- real read-only and full filesystems, in a private mount namespace --------------------
def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = 'mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs "$1"'
    return subprocess.run(["unshare", "-rm", "sh", "-ec", probe, "sh", "/tmp"], check=False).returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="this OS does not allow unprivileged mount namespaces (unshare -rm)"
)


def in_mount_namespace(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sh -ec script`` where mounts are private: even root gets EROFS / ENOSPC there."""
    return subprocess.run(
        ["unshare", "-rm", "sh", "-ec", script, "sh", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def rerank_input(path: Path, *queries: int) -> Path:
    lines = DL19.read_text().splitlines()
    with path.open("w") as out:
        for index in queries:
            record = json.loads(lines[index])
            candidates = [{"id": c["docid"], "text": c["text"]} for c in record["candidates"][:4]]
            out.write(json.dumps({"query": record["query"], "candidates": candidates}) + "\n")
    return path


def cached_flags(output: str) -> list[list[bool]]:
    return [[call["cached"] for call in json.loads(line)["calls"]] for line in output.splitlines()]


RERANK = f'"{LLMRERANK}" rerank --model sim:dl19 --cache-dir "$1/cache"'


@needs_namespaces
def test_a_read_only_mount_keeps_serving_the_cache(tmp_path: Path) -> None:
    first = rerank_input(tmp_path / "a.jsonl", 0)
    both = rerank_input(tmp_path / "ba.jsonl", 1, 0)
    cache_dir = str(tmp_path / "c" / "cache")
    filled = subprocess.run(
        [LLMRERANK, "rerank", "--model", "sim:dl19", "--cache-dir", cache_dir, "-i", str(first)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cached_flags(filled.stdout) == [[False] * 4]
    script = f"""mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"
    ! touch "$1/cache/probe" 2>/dev/null
    {RERANK} --cache-mode read_only -i "$2" > "$3/ro.out" 2> "$3/ro.err"
    {RERANK} -i "$2" > "$3/rw.out" 2> "$3/rw.err"
    """
    ran = in_mount_namespace(script, str(tmp_path / "c"), str(both), str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    for name in ("ro", "rw"):
        # the new query pays; the one cached before the mount turned read-only costs nothing
        assert cached_flags((tmp_path / f"{name}.out").read_text()) == [[False] * 4, [True] * 4]
    assert "Traceback" not in (tmp_path / "rw.err").read_text()
    warnings = (tmp_path / "rw.err").read_text().strip().splitlines()
    assert len(warnings) == 1
    assert "cannot be written" in warnings[0]
    assert "serving reads only" in warnings[0]
    assert (tmp_path / "ro.err").read_text() == ""


@needs_namespaces
def test_after_a_full_disk_an_identical_run_is_served_from_the_cache(tmp_path: Path) -> None:
    first = rerank_input(tmp_path / "a.jsonl", 0)
    both = rerank_input(tmp_path / "ba.jsonl", 1, 0)
    script = f"""mount -t tmpfs -o size=4m tmpfs "$1"
    {RERANK} -i "$2" > "$4/run0.out"
    dd if=/dev/zero of="$1/filler" bs=64k 2>/dev/null || true
    {RERANK} -i "$3" > "$4/full.out" 2> "$4/full.err"
    rm "$1/filler"
    {RERANK} -i "$3" > "$4/freed.out"
    {RERANK} -i "$3" > "$4/again.out"
    """
    (tmp_path / "mnt").mkdir()
    ran = in_mount_namespace(script, str(tmp_path / "mnt"), str(first), str(both), str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    assert cached_flags((tmp_path / "run0.out").read_text()) == [[False] * 4]
    # disk full: the new query cannot be stored, the old one is still served
    assert cached_flags((tmp_path / "full.out").read_text()) == [[False] * 4, [True] * 4]
    assert "Traceback" not in (tmp_path / "full.err").read_text()
    assert cached_flags((tmp_path / "freed.out").read_text()) == [[False] * 4, [True] * 4]
    assert cached_flags((tmp_path / "again.out").read_text()) == [[True] * 4, [True] * 4]


@needs_namespaces
def test_writes_that_hit_a_full_disk_pause_and_resume_while_reads_keep_serving(tmp_path: Path) -> None:
    code = """
import os, sys, time
from llmrerank.cache import BestEffortCache, DiskCache
root = sys.argv[1]
cache = BestEffortCache(DiskCache(root + "/cache"), "responses", cooldown_s=0.2)
assert cache.set("old", "kept")
with open(root + "/filler", "wb") as filler:
    try:
        while True:
            filler.write(b"0" * 65536)
            filler.flush()
    except OSError:
        pass
wrote = [cache.set(f"new{i}", "x" * 20000) for i in range(50)]
assert not all(wrote), "the disk never filled"
assert cache.get("old") == "kept"
os.remove(root + "/filler")
time.sleep(0.3)
assert cache.set("after", "stored")
assert cache.get("after") == "stored" and cache.get("old") == "kept"
print("ok")
"""
    script = 'mount -t tmpfs -o size=4m tmpfs "$1"; exec "$2" -c "$3" "$1"'
    (tmp_path / "mnt").mkdir()
    ran = in_mount_namespace(script, str(tmp_path / "mnt"), sys.executable, code)
    assert ran.stdout.strip() == "ok", ran.stderr
    assert ran.stderr.count("the responses cache is paused") == 1
