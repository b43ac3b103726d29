"""Content-hash response cache on disk (diskcache), safe across processes.

The key is the sha256 of canonical JSON of everything that determines a reply (see
``request_key``); values are JSON text or raw bytes, never pickles. Only validated replies
are stored by the driver, and every hit is validated again before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from ._readonly_cache import ReadOnlyStore
from .errors import CacheError, UserError
from .settings import DEFAULT_CACHE_DIR

__all__ = [
    "CACHE_FORMAT_VERSION",
    "BestEffortCache",
    "CacheMode",
    "CacheNamespace",
    "DiskCache",
    "request_key",
]

logger = logging.getLogger("llmrerank")

CACHE_FORMAT_VERSION = 1


class CacheMode(str, Enum):
    """``read_write`` (default), ``read_only`` (never writes), ``refresh`` (never reads,
    overwrites), ``off`` (neither)."""

    READ_WRITE = "read_write"
    READ_ONLY = "read_only"
    REFRESH = "refresh"
    OFF = "off"

    @property
    def reads(self) -> bool:
        return self in (CacheMode.READ_WRITE, CacheMode.READ_ONLY)

    @property
    def writes(self) -> bool:
        return self in (CacheMode.READ_WRITE, CacheMode.REFRESH)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(material: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``material`` plus the cache-format version.

    Callers pass backend id, model, rendered messages, output schema and decoding options;
    never credentials.
    """
    payload = canonical_json({"cache_format": CACHE_FORMAT_VERSION, **material})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@contextmanager
def _storage_errors(action: str, directory: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise CacheError(f"response cache at {directory} could not {action}: {exc}") from exc


class DiskCache:
    """A directory of cached replies, shared safely by threads and processes.

    ``size_limit`` bounds the store (least-recently-stored entries are evicted first).
    Opening never fails on storage: a directory that cannot be written (a read-only mount)
    keeps serving reads, a corrupt or unreadable one is bypassed; ``degraded_reason`` says
    which, logged once. Errors while reading or writing an open cache raise ``CacheError``
    (``BestEffortCache`` turns them into pauses).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
        *,
        mode: CacheMode | str = CacheMode.READ_WRITE,
        size_limit: int = 2**30,
    ) -> None:
        import diskcache

        try:
            self.mode = CacheMode(mode)
        except ValueError:
            choices = ", ".join(m.value for m in CacheMode)
            raise UserError(f"unknown cache mode {mode!r}; choose one of {choices}") from None
        self.directory = Path(directory).expanduser()
        #: why the cache runs degraded (read-only or bypassed), None when fully usable
        self.degraded_reason: str | None = None
        self._read_only_store: ReadOnlyStore | None = None
        self._store: Any = None
        try:
            self._store = diskcache.Cache(
                str(self.directory), size_limit=size_limit, eviction_policy="least-recently-stored"
            )
        except (OSError, sqlite3.Error) as exc:
            self._open_degraded(exc)

    def _open_degraded(self, error: Exception) -> None:
        """A cache that cannot be opened is never fatal: serve reads if the database can
        be read, else bypass the cache; either way log it once, here."""
        try:
            self._read_only_store = ReadOnlyStore(self.directory)
        except (OSError, sqlite3.Error):
            self.degraded_reason = f"response cache at {self.directory} is unusable ({error}); bypassed"
            logger.warning("%s", self.degraded_reason)
            return
        self.degraded_reason = (
            f"response cache at {self.directory} cannot be written ({error}); serving reads only"
        )
        # asked for read-only use, the user expects no writes: no warning needed
        log = logger.info if self.mode is CacheMode.READ_ONLY else logger.warning
        log("%s", self.degraded_reason)

    @property
    def writable(self) -> bool:
        return self._store is not None

    def namespace(self, name: str) -> CacheNamespace:
        return CacheNamespace(self, name)

    def _reader(self) -> Any:
        return self._store if self._store is not None else self._read_only_store

    def get(self, namespace: str, key: str) -> str | bytes | None:
        reader = self._reader()
        if not self.mode.reads or reader is None:
            return None
        with _storage_errors("be read", self.directory):
            value = reader.get(f"{namespace}:{key}")
        if value is None or isinstance(value, (str, bytes)):
            return value
        raise CacheError(f"cache entry {namespace}:{key} holds {type(value).__name__}, not JSON")

    def set(self, namespace: str, key: str, value: str | bytes) -> None:
        if not self.mode.writes or self._store is None:
            return  # a degraded cache was logged once, when it was opened
        with _storage_errors("be written", self.directory):
            self._store.set(f"{namespace}:{key}", value)

    def delete(self, namespace: str, key: str) -> None:
        if self._store is None:
            raise CacheError(self.degraded_reason or "response cache is not writable")
        with _storage_errors("be written", self.directory):
            self._store.delete(f"{namespace}:{key}")

    def stats(self) -> dict[str, Any]:
        reader = self._reader()
        if reader is None:
            raise CacheError(self.degraded_reason or "response cache is unusable")
        with _storage_errors("be read", self.directory):
            counts: dict[str, int] = {}
            for key in reader.iterkeys():
                namespace = str(key).split(":", 1)[0]
                counts[namespace] = counts.get(namespace, 0) + 1
            return {
                "directory": str(self.directory),
                "mode": self.mode.value,
                "entries": sum(counts.values()),
                "namespaces": counts,
                "size_bytes": int(reader.volume()),
                **({"degraded": self.degraded_reason} if self.degraded_reason else {}),
            }

    def clear(self, namespace: str | None = None) -> int:
        """Remove every entry (or one namespace's); returns how many were removed."""
        if self._store is None:
            raise CacheError(self.degraded_reason or "response cache is not writable")
        with _storage_errors("be cleared", self.directory):
            if namespace is None:
                return int(self._store.clear())
            prefix = f"{namespace}:"
            doomed = [k for k in self._store.iterkeys() if str(k).startswith(prefix)]
            for key in doomed:
                self._store.delete(key)
            return len(doomed)

    def close(self) -> None:
        for store in (self._store, self._read_only_store):
            if store is not None:
                store.close()

    def __enter__(self) -> DiskCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CacheNamespace:
    """A view of one namespace of a ``DiskCache`` (``responses``, ``embeddings``, ...)."""

    def __init__(self, cache: DiskCache, name: str) -> None:
        self.cache = cache
        self.name = name

    def get(self, key: str) -> str | bytes | None:
        return self.cache.get(self.name, key)

    def set(self, key: str, value: str | bytes) -> None:
        self.cache.set(self.name, key, value)

    def delete(self, key: str) -> None:
        self.cache.delete(self.name, key)


class BestEffortCache:
    """One namespace of a ``DiskCache`` (or of none) that never fails its caller.

    A read or write error is logged once per episode and that direction is skipped for
    ``cooldown_s`` before it is tried again, so a full disk stops writes without stopping
    reads, and the cache comes back by itself once the disk has room. Used by the LLM
    driver (``responses``) and the dense stage (``embeddings``).
    """

    def __init__(self, cache: DiskCache | None, namespace: str, *, cooldown_s: float = 30.0) -> None:
        self.cache = cache
        self.namespace = namespace
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._broken_until = {"read": 0.0, "write": 0.0}

    def _usable(self, direction: str) -> bool:
        return self.cache is not None and time.monotonic() >= self._broken_until[direction]

    def _broke(self, direction: str, exc: CacheError) -> None:
        with self._lock:
            first = time.monotonic() >= self._broken_until[direction]
            self._broken_until[direction] = time.monotonic() + self.cooldown_s
        if first:
            what = "reading" if direction == "read" else "writing"
            logger.warning(
                "%s; %s the %s cache is paused for %.0f s", exc, what, self.namespace, self.cooldown_s
            )

    def get(self, key: str) -> str | bytes | None:
        if not self._usable("read"):
            return None
        assert self.cache is not None
        try:
            return self.cache.get(self.namespace, key)
        except CacheError as exc:
            self._broke("read", exc)
            return None

    def set(self, key: str, value: str | bytes) -> bool:
        """Store; False when the entry could not be written (logged, never raised)."""
        if not self._usable("write"):
            return False
        assert self.cache is not None
        try:
            self.cache.set(self.namespace, key, value)
        except CacheError as exc:
            self._broke("write", exc)
            return False
        return True
