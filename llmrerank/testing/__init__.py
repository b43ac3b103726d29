"""Test doubles that speak real wire formats: a local OpenAI/Anthropic server and a
simulated relevance judge that answers reranking prompts from relevance labels."""

from __future__ import annotations

from .judge import SimulatedJudge
from .server import Fault, Hang, Reply, WireRequest, WireResponse, WireServer, always, scripted
from .sim import SimulatedBackend

__all__ = [
    "Fault",
    "Hang",
    "Reply",
    "SimulatedBackend",
    "SimulatedJudge",
    "WireRequest",
    "WireResponse",
    "WireServer",
    "always",
    "scripted",
]
