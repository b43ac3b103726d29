"""Token prices, so a ranking, a cascade stage and an eval run can say what they cost.

The table is data: ``llmrerank/prices.yaml`` ships with the package (USD per million
tokens, dated), and ``LLMRERANK_PRICES`` or an explicit path points at your own copy when
your contract or the providers' prices differ. Models it does not list (``local:``,
``sim:``, a self-hosted server) cost nothing.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UserError
from .types import CallRecord

__all__ = ["DEFAULT_PRICES", "PRICES_ENV", "PriceTable"]

PRICES_ENV = "LLMRERANK_PRICES"
DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")


class _Price(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    # the provider batch API's prices; absent: batches cost the list price
    batch_input: float | None = Field(default=None, ge=0)
    batch_output: float | None = Field(default=None, ge=0)


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    date: datetime.date
    models: dict[str, _Price]


class PriceTable:
    """USD per million prompt (``input``) and completion (``output``) tokens per model."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path or os.environ.get(PRICES_ENV) or DEFAULT_PRICES)
        try:
            table = _Table.model_validate(yaml.safe_load(self.path.read_text("utf-8")))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise UserError(f"cannot read the price table {self.path}: {exc}") from exc
        self.date = table.date.isoformat()
        self.models = table.models

    def known(self, model: str) -> bool:
        return model in self.models

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        """USD for these tokens; ``batch``: at the provider batch API's price where the table has one."""
        price = self.models.get(model)
        if price is None:
            return 0.0
        per_input, per_output = price.input, price.output
        if batch:
            per_input = price.batch_input if price.batch_input is not None else per_input
            per_output = price.batch_output if price.batch_output is not None else per_output
        return (prompt_tokens * per_input + completion_tokens * per_output) / 1e6

    def cost_of(self, calls: Iterable[CallRecord], *, batch: bool = False) -> float:
        """What these calls cost; cache hits carry zero tokens, so they cost nothing."""
        return sum(
            self.cost(c.model, c.usage.prompt_tokens, c.usage.completion_tokens, batch=batch) for c in calls
        )
