import subprocess
import sys
from pathlib import Path

import pytest

from llmrerank import CacheError, DiskCache, UserError
from llmrerank.cache import request_key


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


def test_unusable_directory_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match="could not be opened"):
        DiskCache(blocker)
