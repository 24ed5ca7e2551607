"""The contract between `eval-runner migrate` and the operator: the stack check's report.

An EvalSuite's migration Job migrates the store's schema and checks the cache, from where the
runner pods run, then writes this report as its termination message (as shards write their
summaries); the operator turns it into the suite's StoreReady and CacheReady conditions. It
never carries a password: endpoints are host:port/dbname.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval_api.shard import TERMINATION_MESSAGE_LIMIT

# Reasons of a store that cannot be used (StoreReady False).
STORE_UNREACHABLE = "StoreUnreachable"  # no connection (DNS, refused, timeout, TLS)
STORE_AUTHENTICATION_FAILED = "StoreAuthenticationFailed"  # wrong user or password
INVALID_STORE_SECRET = "InvalidStoreSecret"  # neither a valid uri nor host/dbname/user/password
MIGRATION_FAILED = "MigrationFailed"  # a migration failed, or a shipped one changed
# Reasons of a cache that cannot be used (CacheReady False); runs go on without it.
CACHE_UNREACHABLE = "CacheUnreachable"
INVALID_CACHE_URL = "InvalidCacheURL"


class CacheCheck(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    state: Literal["ok", "unavailable", "disabled"] = "disabled"
    reason: str | None = None
    message: str | None = None
    endpoint: str | None = Field(default=None, description="host:port of the cache.")


class ReaderCheck(BaseModel):
    """The dashboard's read-only role: made (or its password reset) by the migration."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    state: Literal["ok", "failed", "none"] = "none"
    role: str | None = None
    message: str | None = None


class StackReport(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    state: Literal["done", "error"]
    reason: str | None = Field(default=None, description="CamelCase reason when state is error.")
    message: str | None = None
    endpoint: str | None = Field(default=None, description="host:port/dbname of the store.")
    schema_version: int | None = Field(default=None, alias="schemaVersion")
    applied: list[int] = Field(
        default_factory=list, description="Migrations this run applied (the rest were there)."
    )
    cache: CacheCheck = Field(default_factory=CacheCheck)
    reader: ReaderCheck = Field(default_factory=ReaderCheck)

    def to_message(self) -> str:
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        short = self.model_copy(update={"message": (self.message or "")[:1024] + "..."})
        return short.model_dump_json(by_alias=True, exclude_none=True)
