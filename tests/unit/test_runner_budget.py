"""A shard's share of the budget and the reservation rule that keeps spend within it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from eval_api.v1alpha1 import BudgetSpec, Pricing
from eval_runner.budget import (
    Budget,
    BudgetExceeded,
    max_input_tokens,
    share_of_cost,
    share_of_requests,
    worst_case_cost,
)


@pytest.mark.parametrize(("limit", "shards"), [(10, 3), (7, 7), (5, 8), (1000, 1), (11, 4)])
def test_request_shares_sum_to_the_limit_with_the_remainder_to_the_lowest(
    limit: int, shards: int
) -> None:
    shares = [share_of_requests(limit, i, shards) for i in range(shards)]
    assert sum(shares) == limit
    assert shares == sorted(shares, reverse=True) and shares[0] - shares[-1] <= 1


@pytest.mark.parametrize(("limit", "shards"), [("1", 3), ("0.50", 4), ("10", 7), ("5.00", 1)])
def test_cost_shares_never_sum_above_the_limit(limit: str, shards: int) -> None:
    shares = [share_of_cost(Decimal(limit), i, shards) for i in range(shards)]
    assert sum(shares) <= Decimal(limit)
    assert Decimal(limit) - sum(shares) < Decimal("1e-9")


def test_budget_for_a_shard() -> None:
    spec = BudgetSpec.model_validate({"maxCostUSD": "1", "maxRequests": 10})
    budget = Budget.for_shard(spec, 2, 3)
    assert budget.max_requests == 3 and budget.max_cost == Decimal("0.333333333333")
    assert not Budget.for_shard(None, 0, 1).limited


def test_worst_case_is_an_upper_bound_of_the_prompt() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2 ="}]
    assert max_input_tokens(messages) == 9 + 7 + 2 * 8 + 16  # type: ignore[arg-type]
    pricing = Pricing.model_validate({"inputPerMillionUSD": "2", "outputPerMillionUSD": "4"})
    assert worst_case_cost(pricing, 1_000_000, 500_000) == Decimal(4)
    assert worst_case_cost(None, 10, 10) == 0


def test_reservations_keep_spend_within_the_limit() -> None:
    budget = Budget(max_cost=Decimal("10"))
    first = budget.begin(Decimal("4"))
    second = budget.begin(Decimal("4"))
    with pytest.raises(BudgetExceeded, match="could cost up to \\$4"):
        budget.begin(Decimal("4"))  # 0 spent + 8 reserved + 4 > 10
    assert budget.exceeded is not None
    budget.end(first, Decimal("1"))
    budget.end(second, Decimal("2"))
    assert (budget.spent, budget.reserved, budget.requests) == (Decimal(3), 0, 2)
    with pytest.raises(BudgetExceeded):
        budget.begin(Decimal("0"))  # once exceeded, nothing new starts


def test_request_limit() -> None:
    budget = Budget(max_requests=2)
    budget.begin(Decimal(0))
    budget.begin(Decimal(0))
    with pytest.raises(BudgetExceeded, match="all 2 requests of the shard's share"):
        budget.begin(Decimal(0))
    assert budget.requests == 2
