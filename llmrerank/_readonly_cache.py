"""Read access to a diskcache directory that cannot be opened for writing.

``diskcache.Cache`` writes to its database when it opens (settings, schema), so on a
read-only mount it fails. This store reads the same ``Cache`` table through SQLite's
read-only URI modes and diskcache's own value decoding, so cached replies keep being served;
pickled values are never loaded (llmrerank stores only JSON text and bytes).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ReadOnlyStore"]

_PICKLE_MODE = 4


class ReadOnlyStore:
    """The ``get``/``iterkeys``/``volume``/``close`` subset of ``diskcache.Cache``, read-only."""

    def __init__(self, directory: Path) -> None:
        import diskcache

        database = directory / "cache.db"
        if not database.is_file():
            raise FileNotFoundError(f"no cache database at {database}")
        self._disk = diskcache.Disk(str(directory))
        self._sql = self._connect(database)

    @staticmethod
    def _connect(database: Path) -> sqlite3.Connection:
        error: sqlite3.Error | None = None
        # mode=ro honours other writers' locks; immutable=1 works where SQLite cannot even
        # create its shared-memory file (a WAL database on a read-only mount)
        for options in ("mode=ro", "mode=ro&immutable=1"):
            try:
                connection = sqlite3.connect(
                    f"{database.resolve().as_uri()}?{options}", uri=True, check_same_thread=False
                )
                connection.execute("SELECT COUNT(*) FROM Cache").fetchone()
                return connection
            except sqlite3.Error as exc:
                error = exc
        assert error is not None
        raise error

    def get(self, key: str) -> object:
        db_key, raw = self._disk.put(key)
        row = self._sql.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ?"
            " AND (expire_time IS NULL OR expire_time > ?)",
            (db_key, raw, time.time()),
        ).fetchone()
        if row is None:
            return None
        mode, filename, value = row
        if mode == _PICKLE_MODE:
            return object()  # refused: the caller reports an entry that is not JSON
        return self._disk.fetch(mode, filename, value, False)

    def iterkeys(self) -> Iterator[object]:
        for (key,) in self._sql.execute("SELECT key FROM Cache ORDER BY rowid"):
            yield key

    def volume(self) -> int:
        (pages,) = self._sql.execute("PRAGMA page_count").fetchone()
        (size,) = self._sql.execute("PRAGMA page_size").fetchone()
        (files,) = self._sql.execute("SELECT COALESCE(SUM(size), 0) FROM Cache").fetchone()
        return int(pages) * int(size) + int(files)

    def close(self) -> None:
        self._sql.close()
