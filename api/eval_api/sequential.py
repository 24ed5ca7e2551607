"""Anytime-valid confidence sequences for a mean score in [0, 1] (execution.earlyStop).

An ordinary 95% interval covers the mean at one sample size fixed in advance; watched as samples
arrive and acted on the first time it clears a threshold, it is wrong far more often than 5%.
A confidence sequence covers the mean at every sample size at once, with probability at least
`confidence`, so a run may stop whenever it says the verdict is known.

The sequence here is the two-sided beta-binomial mixture of Howard, Ramdas, McAuliffe and Sekhon
(2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", section 3.2 and
Proposition 7). For a candidate mean p, scores X_i in [0, 1] with conditional mean p make
Z_i = X_i - p zero-mean in [-p, 1 - p]: sub-Bernoulli with range (g, h) = (p, 1 - p). With
s = sum Z_i and the intrinsic time v = p (1 - p) n,

    M(p) = B(a + S, b + n - S) / (B(a, b) p^S (1 - p)^(n - S)),   a = r / (1 - p), b = r / p

(S = sum X_i) is a nonnegative supermartingale: a mixture over a Beta prior centred on p of the
likelihood ratios against p. By Ville's inequality P(some n has M(p) >= 1/alpha) <= alpha, so
{p : M(p) < 1/alpha} covers the mean at every n with probability at least 1 - alpha. It depends
on the scores only through n and S: the sums the shards already report. The prior's weight r is
tuned (as the paper does) so the boundary is tightest near n = t_opt samples.

confseq (the paper's own implementation, `bernoulli_confidence_interval`) is the reference this
is checked against to 1e-9 (tests/unit/test_sequential.py; `make reference-cs` regenerates its
values).
"""

from __future__ import annotations

import math
from collections.abc import Callable

_BISECTIONS = 200
# Where the bisection stops: the bounds agree with the reference well within 1e-9.
_RELATIVE_TOLERANCE = 1e-14


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def mixture_weight(p: float, t_opt: float, alpha_opt: float) -> float:
    """The prior's weight r for candidate mean p: the normal mixture's optimal variance at
    intrinsic time v_opt = p (1 - p) t_opt, less the Bernoulli variance (at least a 1000th
    of it)."""
    variance = p * (1 - p)
    log_inverse = math.log(1 / alpha_opt)
    rho = variance * t_opt / (2 * log_inverse + math.log(1 + 2 * log_inverse))
    return max(rho - variance, 1e-3 * variance)


def log_mixture(successes: float, trials: float, p: float, t_opt: float, alpha_opt: float) -> float:
    """log M(p) after `trials` scores summing to `successes` (the module's docstring)."""
    r = mixture_weight(p, t_opt, alpha_opt)
    a, b = r / (1 - p), r / p
    failures = trials - successes
    return (
        _log_beta(a + successes, b + failures)
        - _log_beta(a, b)
        - successes * math.log(p)
        - failures * math.log(1 - p)
    )


def _crossing(inside: float, outside: float, excluded) -> float:  # noqa: ANN001
    """The point between `inside` (in the sequence) and `outside` (not) where it ends."""
    for _ in range(_BISECTIONS):
        middle = (inside + outside) / 2
        if excluded(middle):
            outside = middle
        else:
            inside = middle
        if abs(outside - inside) <= _RELATIVE_TOLERANCE * max(abs(inside), abs(outside)):
            break
    return (inside + outside) / 2


def confidence_sequence(
    successes: float, trials: int, alpha: float, t_opt: float, alpha_opt: float | None = None
) -> tuple[float, float]:
    """The interval, at `trials` scores in [0, 1] summing to `successes`, of a sequence that
    covers their mean at every sample size at once with probability 1 - alpha. `t_opt`: the
    sample size it is tightest near; `alpha_opt`: the level it is tuned for (alpha)."""
    if trials <= 0:
        return 0.0, 1.0
    alpha_opt = alpha if alpha_opt is None else alpha_opt
    return _interval(
        successes / trials,
        lambda p: log_mixture(successes, trials, p, t_opt, alpha_opt),
        alpha,
    )


def _interval(mean: float, log_m: Callable[[float], float], alpha: float) -> tuple[float, float]:
    """{p : log_m(p) < log(1/alpha)}, searched outwards from `mean` (inside it)."""
    threshold = math.log(1 / alpha)

    def excluded(p: float) -> bool:
        return p <= 0 or p >= 1 or log_m(p) >= threshold

    lower = 0.0 if mean <= 0 else _crossing(mean, 0.0, excluded)
    upper = 1.0 if mean >= 1 else _crossing(mean, 1.0, excluded)
    return lower, upper


# --- groups (task.groupField) ------------------------------------------------------------------
#
# Scores of one group (questions on one passage) are not independent, but whole groups asked in
# a random order are. For a candidate mean p (of the samples: E[S_g - p n_g] = 0 over groups),
# a group's (S_g - p n_g) / n_max lies in [-p, 1 - p] when every group has at most n_max
# samples: sub-Bernoulli with the same range, so the same mixture holds with s the sum of those
# increments over the G finished groups and v = p (1 - p) G. In the form above that is G
# "trials" with G p + (S - p n) / n_max "successes" (S, n: the finished groups' sums).


def _grouped_successes(
    closed_sum: float, closed_n: int, groups: int, max_group: int, p: float
) -> float:
    return groups * p + (closed_sum - p * closed_n) / max_group


def grouped_sequence(
    closed_sum: float,
    closed_n: int,
    groups: int,
    max_group: int,
    alpha: float,
    t_opt: float,
    alpha_opt: float | None = None,
) -> tuple[float, float]:
    """The interval of the samples' mean from the `groups` finished groups (`closed_n` scores
    summing to `closed_sum`), no group larger than `max_group`; `t_opt` in groups."""
    if groups <= 0 or closed_n <= 0:
        return 0.0, 1.0
    alpha_opt = alpha if alpha_opt is None else alpha_opt
    return _interval(
        closed_sum / closed_n,
        lambda p: log_mixture(
            _grouped_successes(closed_sum, closed_n, groups, max_group, p), groups, p, t_opt,
            alpha_opt,
        ),
        alpha,
    )  # fmt: skip


def grouped_excludes(
    closed_sum: float,
    closed_n: int,
    groups: int,
    max_group: int,
    p: float,
    alpha: float,
    t_opt: float,
) -> bool:
    """Whether the grouped sequence leaves out mean `p` (one evaluation of the mixture)."""
    if groups <= 0 or closed_n <= 0:
        return False
    mean = closed_sum / closed_n
    if p >= 1:
        return mean < 1
    if p <= 0:
        return mean > 0
    successes = _grouped_successes(closed_sum, closed_n, groups, max_group, p)
    return log_mixture(successes, groups, p, t_opt, alpha) >= math.log(1 / alpha)


def excludes(successes: float, trials: int, p: float, alpha: float, t_opt: float) -> bool:
    """Whether the sequence at `trials` scores summing to `successes` leaves out mean `p`: one
    evaluation of the mixture, where the interval needs a search (the sequence is an
    interval, so a threshold is decided exactly when it is left out)."""
    if trials <= 0:
        return False
    mean = successes / trials
    if p >= 1:  # one score below 1 shows the mean is below 1
        return mean < 1
    if p <= 0:
        return mean > 0
    return log_mixture(successes, trials, p, t_opt, alpha) >= math.log(1 / alpha)


def side_of(successes: float, trials: int, value: float, alpha: float, t_opt: float) -> str:
    """ "above" or "below" once the sequence lies wholly on that side of `value`, else
    "undecided"."""
    if trials <= 0 or not excludes(successes, trials, value, alpha, t_opt):
        return "undecided"
    return "above" if successes / trials > value else "below"


# --- empirical Bernstein (the suite's regression gate) -------------------------------------------
#
# The beta-binomial mixture assumes the worst variance a [0, 1] mean allows, p (1 - p). Paired
# differences of 0/1 scores, (candidate - baseline + 1) / 2, are mostly 1/2 (both runs right or
# both wrong): their variance is a tenth of that, and a sequence that ignores it decides almost
# nothing. Howard et al. (2021, Theorem 4) make the variance part of the sequence: for X_i in
# [0, 1] with mean mu and a predictable estimate m_{i-1} in [0, 1] of it (here the running mean,
# 1/2 before any value), S_t = sum (X_i - mu) is sub-exponential with scale 1 and variance process
# V_t = sum (X_i - m_{i-1})^2, and so is -S_t (apply it to 1 - X_i: the same V_t). Their
# gamma-exponential mixture (Proposition 9) turns that into a boundary u(V_t) with
# P(some t has S_t >= u(V_t)) <= alpha: the mean lies in [mean_t - u/t, mean_t + u/t] at every t,
# each side with probability 1 - alpha. V_t adds up over shards (each shard's running mean is
# predictable in the joint order the operator sees), so shards report (n, sum, V).
#
# The boundary needs the regularized lower incomplete gamma function P(a, x), computed below by
# its power series (x < a + 1) and its continued fraction (otherwise), as every numerical library
# does; tests/unit/test_sequential_bernstein.py holds it to scipy's gammainc on adversarial
# inputs (scipy is not in the operator's image).

_GAMMA_ITERATIONS = 100_000
_GAMMA_EPSILON = 1e-16
_TINY = 1e-300
_STIRLING_FROM = 15.0


def _log_gamma_prefix(a: float, x: float) -> float:
    """log(x^a e^-x / Gamma(a)). For large a through Stirling's series, whose terms keep the
    cancellation of a log x against log Gamma(a) out of the arithmetic (to 1e-15, not 1e-11)."""
    if a < _STIRLING_FROM:
        return -x + a * math.log(x) - math.lgamma(a)
    t = (x - a) / a
    inverse = 1 / a
    inverse_sq = inverse * inverse
    # log Gamma(a) - ((a - 1/2) log a - a + log(2 pi) / 2), its error below 1/(1188 a^9)
    stirling_error = inverse * (
        1 / 12 - inverse_sq * (1 / 360 - inverse_sq * (1 / 1260 - inverse_sq / 1680))
    )
    return (
        a * (math.log1p(t) - t) + 0.5 * math.log(a) - 0.5 * math.log(2 * math.pi) - stirling_error
    )


def _log_gamma_p_parts(a: float, x: float) -> tuple[float, float]:
    """log P(a, x) as (log(x^a e^-x / Gamma(a)), the rest), for a > 0, x > 0: the mixture
    needs the rest alone, free of the cancellation in the first part."""
    log_prefix = _log_gamma_prefix(a, x)
    if x < a + 1:
        # P(a, x) = x^a e^-x / Gamma(a + 1) * sum_k x^k / ((a + 1) ... (a + k))
        term = total = 1 / a
        denominator = a
        for _ in range(_GAMMA_ITERATIONS):
            denominator += 1
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _GAMMA_EPSILON:
                return log_prefix, math.log(total)
        raise ArithmeticError(f"P({a}, {x}): the series did not converge")
    # Q(a, x) = 1 - P(a, x) by Legendre's continued fraction, evaluated by Lentz's method.
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    fraction = d
    for i in range(1, _GAMMA_ITERATIONS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        step = d * c
        fraction *= step
        if abs(step - 1) < _GAMMA_EPSILON:
            return log_prefix, math.log1p(-math.exp(log_prefix) * fraction) - log_prefix
    raise ArithmeticError(f"P({a}, {x}): the continued fraction did not converge")


def log_gamma_p(a: float, x: float) -> float:
    """log P(a, x), the regularized lower incomplete gamma function, for a > 0, x >= 0."""
    if a <= 0:
        raise ValueError(f"log_gamma_p needs a > 0, got {a}")
    if x <= 0:
        return -math.inf
    prefix, rest = _log_gamma_p_parts(a, x)
    return prefix + rest


def normal_mixture_rho(v_opt: float, alpha_opt: float) -> float:
    """The one-sided normal mixture's variance optimal at intrinsic time v_opt, which the
    gamma-exponential mixture borrows (Howard et al. 2021, eq. (14))."""
    log_inverse = math.log(1 / (2 * alpha_opt))
    return v_opt / (2 * log_inverse + math.log(1 + 2 * log_inverse))


def gamma_exponential_log_mixture(
    s: float, v: float, v_opt: float, c: float = 1.0, alpha_opt: float = 0.05
) -> float:
    """log of the gamma-exponential mixture at S_t = s, V_t = v (scale c, tuned for v_opt)."""
    rho = normal_mixture_rho(v_opt, alpha_opt)
    c_sq = c * c
    rho_c = rho / c_sq
    leading = rho_c * math.log(rho_c) - math.lgamma(rho_c) - log_gamma_p(rho_c, rho_c)
    # lgamma(shape) + log P(shape, point) - shape log(point) + (c s + v) / c^2: the first
    # part of log P cancels the rest but for -rho / c^2.
    shape = (v + rho) / c_sq
    point = (c * s + v) / c_sq + rho_c
    return leading - rho_c + _log_gamma_p_parts(shape, point)[1]


def gamma_exponential_bound(
    v: float, alpha: float, v_opt: float, c: float = 1.0, alpha_opt: float | None = None
) -> float:
    """u(v): S_t stays below u(V_t) at every t with probability 1 - alpha."""
    alpha_opt = alpha if alpha_opt is None else alpha_opt
    threshold = math.log(1 / alpha)

    def beyond(s: float) -> bool:
        return gamma_exponential_log_mixture(s, v, v_opt, c, alpha_opt) >= threshold

    outside = v if v > 0 else c
    for _ in range(64):
        if beyond(outside):
            break
        outside *= 2
    else:
        raise ArithmeticError(f"no bound found for v={v}")
    return _crossing(0.0, outside, beyond)


def variance_increment(n: int, total: float, value: float) -> float:
    """What `value` adds to the variance process after `n` values summing to `total`: its
    squared distance from their running mean (1/2 before any), known before it arrived."""
    estimate = 0.5 if n == 0 else total / n
    return (value - estimate) ** 2


def bernstein_sequence(
    n: int, total: float, variance: float, alpha: float, v_opt: float
) -> tuple[float, float]:
    """The interval of the mean of `n` values in [0, 1] summing to `total`, with variance
    process `variance` (sum of (X_i - m_{i-1})^2): each side holds at every n with probability
    1 - alpha."""
    if n <= 0:
        return 0.0, 1.0
    half = gamma_exponential_bound(variance, alpha, v_opt) / n
    mean = total / n
    return max(0.0, mean - half), min(1.0, mean + half)


def bernstein_side(
    n: int, total: float, variance: float, value: float, alpha: float, v_opt: float
) -> str:
    """ "above" or "below" once bernstein_sequence lies wholly on that side of `value`, else
    "undecided": one evaluation of the mixture (the boundary is increasing in s)."""
    if n <= 0:
        return "undecided"
    threshold = math.log(1 / alpha)
    below = n * value - total  # how far the sum is below n * value
    if below > 0 and gamma_exponential_log_mixture(below, variance, v_opt, 1.0, alpha) > threshold:
        return "below"
    if below < 0 and gamma_exponential_log_mixture(-below, variance, v_opt, 1.0, alpha) > threshold:
        return "above"
    return "undecided"
