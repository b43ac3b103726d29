"""Device choice shared by the local encoder stages: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

from typing import Any

from .errors import UserError

INSTALL_HINT = 'local models need `pip install "llmrerank[local]"` (sentence-transformers)'


def import_sentence_transformers() -> Any:
    try:
        import sentence_transformers
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return sentence_transformers


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
