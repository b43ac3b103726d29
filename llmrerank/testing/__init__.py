"""Test doubles: an in-process ``FunctionBackend`` and plan driver for unit tests, a local
OpenAI/Anthropic wire-format server for the real SDKs, and a simulated relevance judge that
answers reranking prompts from relevance labels (``sim:`` backends)."""

from __future__ import annotations

from ..backends.registry import register_backend
from .function import FunctionBackend, ScriptedAnswers, drive_plan
from .judge import SimulatedJudge
from .server import Fault, Hang, Reply, WireRequest, WireResponse, WireServer, always, scripted
from .sim import judge_endpoint, simulated_backend

__all__ = [
    "Fault",
    "FunctionBackend",
    "Hang",
    "Reply",
    "ScriptedAnswers",
    "SimulatedJudge",
    "WireRequest",
    "WireResponse",
    "WireServer",
    "always",
    "drive_plan",
    "judge_endpoint",
    "scripted",
    "simulated_backend",
]

register_backend("sim", simulated_backend, replace=True)
