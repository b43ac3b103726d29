"""Test doubles that speak real wire formats: a local OpenAI/Anthropic server and a
simulated relevance judge that answers reranking prompts from relevance labels."""

from __future__ import annotations

from .judge import SimulatedJudge
from .server import Fault, Hang, Reply, WireRequest, WireResponse, WireServer, always, scripted

__all__ = [
    "Fault",
    "Hang",
    "Reply",
    "SimulatedJudge",
    "WireRequest",
    "WireResponse",
    "WireServer",
    "always",
    "scripted",
]
