"""spec.model, and an llm_judge scorer's judge: the endpoint, its sampling parameters, rate
limits, timeouts and token prices.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from eval_api.v1alpha1.common import (
    DECIMAL_PATTERN,
    ApiModel,
    CABundleSource,
    SecretKeySelector,
    cel_rule,
)


class ModelParameters(ApiModel):
    """Sampling parameters sent with every request."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.temperature) || double(self.temperature) <= 2.0",
                    "temperature must be between 0 and 2",
                    ".temperature",
                ),
                cel_rule(
                    "!has(self.topP) || double(self.topP) <= 1.0",
                    "topP must be between 0 and 1",
                    ".topP",
                ),
            ]
        }
    )

    temperature: str | None = Field(
        default=None,
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='Sampling temperature as a decimal string from "0" to "2", e.g. "0.7".',
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Maximum number of tokens to generate."
    )
    top_p: str | None = Field(
        default=None,
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='Nucleus sampling mass as a decimal string from "0" to "1", e.g. "0.9".',
    )
    stop: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        max_length=8,
        description="Stop sequences (at most 8, each at most 256 characters).",
    )
    seed: int | None = Field(
        default=None, description="Seed for providers that support reproducible sampling."
    )


class Pricing(ApiModel):
    """Prices in US dollars per million tokens, used to compute status.usage.costUSD."""

    input_per_million_usd: str = Field(
        alias="inputPerMillionUSD",
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='USD per million input (prompt) tokens, e.g. "0.15".',
    )
    output_per_million_usd: str = Field(
        alias="outputPerMillionUSD",
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='USD per million output (completion) tokens, e.g. "0.60".',
    )

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        million = Decimal(1_000_000)
        return (
            Decimal(self.input_per_million_usd) * input_tokens
            + Decimal(self.output_per_million_usd) * output_tokens
        ) / million


class EndpointSpec(ApiModel):
    """A model endpoint and how to call it (shared by the model under evaluation and judges)."""

    provider: Literal["openai", "anthropic"] = Field(
        default="openai",
        description=(
            "API flavour: openai is any OpenAI-compatible chat-completions endpoint "
            "(OpenAI, vLLM, Ollama, TGI, LiteLLM); anthropic is the Anthropic Messages API."
        ),
    )
    name: str = Field(min_length=1, max_length=256, description="Model name sent in each request.")
    base_url: str | None = Field(
        default=None,
        alias="baseURL",
        max_length=2048,
        pattern=r"^https?://",
        description=(
            "Endpoint base URL, e.g. http://vllm.models:8000/v1. Defaults to the provider's "
            "public API."
        ),
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding the API key. It is mounted into runner pods as an environment "
            "variable and never copied anywhere else. Omit for endpoints without auth."
        ),
    )
    parameters: ModelParameters = Field(
        default_factory=ModelParameters, description="Sampling parameters."
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=1024, description="Upper bound of concurrent requests per shard."
    )
    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Request rate limit per shard (a token bucket holding one second's worth).",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description=(
            "Token rate limit per shard: a request is charged its estimated prompt tokens plus "
            "maxTokens up front and corrected to the reported usage afterwards."
        ),
    )
    timeout_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description=(
            "Timeout of one request; a timed-out request is retried like a 5xx, and costs its "
            "worst case (the provider may have processed it): see status.usage.timedOut."
        ),
    )
    unreachable_after_seconds: int = Field(
        default=120,
        ge=1,
        le=86400,
        description=(
            "How long the endpoint may refuse connections (or not resolve, or fail its TLS "
            "handshake) with no answer in between before the shard stops with reason "
            "EndpointUnreachable. Samples waiting for the endpoint's circuit breaker use none "
            "of their retries meanwhile. Left unset, an endpoint that refused every connection "
            "from the first request (a wrong baseURL) gets 10 s at most; set, it is the "
            "patience from the start too (a model server still loading)."
        ),
    )
    pricing: Pricing | None = Field(
        default=None, description="Token prices, to report cost and enforce budget.maxCostUSD."
    )


class ModelSpec(EndpointSpec):
    """The model under evaluation and how to reach it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.api) || self.api == 'ChatCompletions' || "
                    "!has(self.provider) || self.provider == 'openai'",
                    "api Completions is the OpenAI-compatible /v1/completions: provider openai",
                    ".api",
                )
            ]
        }
    )

    api: Literal["ChatCompletions", "Completions"] = Field(
        default="ChatCompletions",
        description=(
            "ChatCompletions (default) sends messages (/v1/chat/completions, or Anthropic's "
            "Messages API); Completions sends the prompt as text (/v1/completions, provider "
            "openai: vLLM, TGI, llama.cpp), as lm-eval's local-completions does. "
            "Multiple-choice tasks of task.lmEval and task.preset score each choice by its "
            "log-likelihood, read from the prompt's log-probabilities (echo with logprobs): "
            "they need Completions on an endpoint that returns them (vLLM); one that does "
            "not stops the run with reason LogprobsUnsupported."
        ),
    )

    ca_bundle: CABundleSource | None = Field(
        default=None,
        description=(
            "CA bundle for endpoints behind a private CA (trusted for llm_judge endpoints too)."
        ),
    )


class JudgeSpec(EndpointSpec):
    """The model that grades answers for an llm_judge scorer. Its requests go through the same
    concurrency limit, rate limits, retries and budget as the model's, and are counted apart in
    status.usage.judge. Its key is mounted from its own apiKeySecretRef."""
