"""Pure reranking strategies: each turns candidates into LLM questions and answers into an order."""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .base import PassageBudget, PlanContext, Strategy
from .listwise import Listwise
from .pairwise import Pairwise
from .pointwise import Pointwise
from .setwise import Setwise

__all__ = [
    "Listwise",
    "Pairwise",
    "PassageBudget",
    "PlanContext",
    "Pointwise",
    "Setwise",
    "Strategy",
    "make_strategy",
    "strategy_names",
]

_STRATEGIES: dict[str, type[Strategy]] = {
    "listwise": Listwise,
    "pairwise": Pairwise,
    "pointwise": Pointwise,
    "setwise": Setwise,
}


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


def make_strategy(name: str, **options: Any) -> Strategy:
    """``pointwise``, ``listwise``, ``pairwise`` or ``setwise``, with that class's options."""
    try:
        cls = _STRATEGIES[name]
    except KeyError:
        raise UserError(f"unknown strategy {name!r}; choose one of {', '.join(strategy_names())}") from None
    return cls(**options)
