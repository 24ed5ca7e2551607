"""What earlier attempts of a shard spent: the ledger a retry's budget share is cut by.

A shard's retry (after a crash, an OOM kill, an eviction) must not get a fresh share of
spec.budget: the operator, which sees every attempt's final summary, writes what the ended
attempts of each shard spent into the run's ledger ConfigMap, mounted into the runner pods;
a retry waits until the ledger accounts for all its earlier attempts (the Job controller
counts them in the pod's annotations) and spends only what they left.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, RootModel

LEDGER_KEY = "ledger.json"


class Spent(BaseModel):
    """The ended attempts of one shard: how many, at most what they cost, what they sent."""

    model_config = ConfigDict(populate_by_name=True)

    attempts: int = 0
    cost_usd: str = Field(default="0", alias="costUSD")
    requests: int = 0
    # An ended attempt that ran but left no summary (its node died, say): what it spent is
    # unknown, so its retry sends nothing rather than risk the budget.
    unknown: bool = False

    def cost(self) -> Decimal:
        return Decimal(self.cost_usd)


class Ledger(RootModel[dict[str, Spent]]):
    """Shard index (as a string, JSON's keys) -> what its ended attempts spent."""

    root: dict[str, Spent] = Field(default_factory=dict)

    def of(self, shard: int) -> Spent:
        return self.root.get(str(shard), Spent())

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)
