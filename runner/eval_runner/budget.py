"""Spend limits of one shard: requests and cost, enforced before each request starts."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal

from eval_api.ledger import Spent
from eval_api.v1alpha1.execution import BudgetSpec
from eval_api.v1alpha1.model import Pricing
from eval_runner.prompt import Message

# Precision of a shard's cost share: rounding down, the shares never add up to more than the
# limit.
COST_QUANTUM = Decimal("1e-12")
# Token overhead of the chat format on top of the text, per message and per request; generous
# for the OpenAI and Anthropic formats, so the estimate stays an upper bound.
TOKENS_PER_MESSAGE = 8
TOKENS_PER_REQUEST = 16


class BudgetExceeded(Exception):
    """The next request could exceed the shard's share of the budget: it does not start."""


def share_of_requests(limit: int, shard: int, shards: int) -> int:
    """Whole requests per shard; the remainder goes to the lowest shards."""
    base, remainder = divmod(limit, shards)
    return base + (1 if shard < remainder else 0)


def share_of_cost(limit: Decimal, shard: int, shards: int) -> Decimal:
    """An equal decimal share, rounded down: the shares sum to at most the limit."""
    return (limit / shards).quantize(COST_QUANTUM, rounding=ROUND_DOWN)


def max_input_tokens(messages: list[Message]) -> int:
    """An upper bound of a prompt's tokens: byte-level tokenizers never make more tokens than
    bytes, plus the chat format's overhead."""
    text_bytes = sum(len(m["content"].encode()) for m in messages)
    return text_bytes + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REQUEST


def worst_case_cost(pricing: Pricing | None, input_tokens: int, max_output: int | None) -> Decimal:
    if pricing is None:
        return Decimal(0)
    if max_output is None:
        # No maxTokens, no bound on the output: the worst case is the prompt's. The API demands
        # maxTokens whenever maxCostUSD is set, so no budget relies on this; a timed-out
        # request of such a run is charged its prompt only.
        max_output = 0
    return pricing.cost(input_tokens, max_output)


class Budget:
    """One shard's share of spec.budget, shared by the model's and the judges' clients.

    Before a request starts, `begin` counts it and reserves its worst-case cost; it refuses
    (raising BudgetExceeded, and from then on refusing everything) if the request count would
    pass its share, or if spent + reserved + this worst case would pass the cost share. `end`
    replaces the reservation by the real cost. Since a reservation is never below the real
    cost, what is spent never passes the share.
    """

    def __init__(self, max_requests: int | None = None, max_cost: Decimal | None = None) -> None:
        self.max_requests = max_requests
        self.max_cost = max_cost
        self.requests = 0
        self.spent = Decimal(0)
        self.reserved = Decimal(0)
        self.exceeded: str | None = None
        # Called once a request is counted and reserved, before it is sent: the shard puts
        # the reservation in its termination message, so a kill cannot hide the request.
        self.on_sent: Callable[[], None] | None = None

    def after(self, earlier: Spent) -> Budget:
        """This shard's share less what its earlier attempts spent (a retry's share)."""
        if earlier.unknown:
            self.max_requests = 0 if self.max_requests is not None else None
            self.max_cost = Decimal(0) if self.max_cost is not None else None
            return self
        if self.max_requests is not None:
            self.max_requests = max(self.max_requests - earlier.requests, 0)
        if self.max_cost is not None:
            self.max_cost = max(self.max_cost - earlier.cost(), Decimal(0))
        return self

    def sent(self) -> None:
        if self.limited and self.on_sent is not None:
            self.on_sent()

    @classmethod
    def for_shard(cls, spec: BudgetSpec | None, shard: int, shards: int) -> Budget:
        if spec is None:
            return cls()
        return cls(
            max_requests=None
            if spec.max_requests is None
            else share_of_requests(spec.max_requests, shard, shards),
            max_cost=None
            if spec.max_cost_usd is None
            else share_of_cost(Decimal(spec.max_cost_usd), shard, shards),
        )

    @property
    def limited(self) -> bool:
        return self.max_requests is not None or self.max_cost is not None

    def begin(self, worst_cost: Decimal) -> Decimal:
        """Count one request and reserve its worst-case cost; returns the reservation."""
        if self.exceeded is not None:
            raise BudgetExceeded(self.exceeded)
        if self.max_requests is not None and self.requests >= self.max_requests:
            self._exceed(f"all {self.max_requests} requests of the shard's share are sent")
        if self.max_cost is not None and self.spent + self.reserved + worst_cost > self.max_cost:
            self._exceed(f"the next request could cost up to ${usd(worst_cost)}")
        self.requests += 1
        self.reserved += worst_cost
        return worst_cost

    def end(self, reservation: Decimal, cost: Decimal) -> None:
        self.reserved -= reservation
        self.spent += cost

    def _exceed(self, message: str) -> None:
        self.exceeded = message
        raise BudgetExceeded(message)


def usd(value: Decimal) -> str:
    """A dollar amount for messages: 1.50 -> "1.5", 2E+1 -> "20"."""
    return format(value.normalize(), "f")
