"""``llmrerank``: rerank JSONL from the shell, manage prompts and the cache, run evals, label and distil.

One module per command (group); ``main`` imports each only when its command is run
(``_app.COMMANDS``), so a one-query ``llmrerank rerank`` pays for what it uses.
"""

from __future__ import annotations

from ._app import main, run

__all__ = ["main", "run"]
