"""``llmrerank``: rerank JSONL from the shell, manage prompts and the cache, run evals, label and distil.

One module per command (group); each registers itself on ``main``.
"""

from __future__ import annotations

from . import cache, demo, index, prompts, rerank, serve, training
from ._app import main

__all__ = ["main"]

del cache, demo, index, prompts, rerank, serve, training


def _attach_optional_groups() -> None:
    try:
        from ..evaluation.cli import eval_group
    except ImportError:  # the eval extra is not installed
        return
    main.add_command(eval_group, "eval")


_attach_optional_groups()
