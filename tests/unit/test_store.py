"""The store's pure parts: settings from the env contract (never showing the password), the
shipped migrations (additive only), rows and what resumed samples carry, local identities."""

from __future__ import annotations

import json
import re
import ssl
from decimal import Decimal
from pathlib import Path

import pytest
import trustme

from eval_api import environment
from eval_api.aggregate import aggregate
from eval_api.shard import ResumedSamples, ShardSummary, ShardUsage
from eval_api.store import MIGRATIONS, StoreSettings, StoreSettingsError
from eval_api.v1alpha1 import Evaluation, Pricing
from eval_runner.client import Completion, Spend
from eval_runner.dataset import Sample
from eval_runner.errors import PermanentError
from eval_runner.results import SampleResult
from eval_runner.secrets import Secrets
from eval_runner.store import (
    COLUMNS,
    Outage,
    RunIdentity,
    StoredSample,
    StoreUnavailable,
    WriterSettings,
    carried_usage,
    conflicts,
    input_hash,
    local_evaluation_uid,
    new_local_run,
    prompt_hash,
    sample_row,
    spec_hash,
)

PASSWORD = "s3cret/with@odd:chars"  # noqa: S105
ENCODED = "s3cret%2Fwith%40odd%3Achars"
URI = f"postgresql://app:{ENCODED}@db.store.svc:5433/results?sslmode=require"


def test_a_uri_with_its_password_encoded() -> None:
    settings = StoreSettings.from_uri(URI)
    assert (settings.host, settings.port, settings.dbname, settings.user) == (
        "db.store.svc",
        5433,
        "results",
        "app",
    )
    assert settings.password == PASSWORD and settings.sslmode == "require"
    assert str(settings) == "postgresql://app@db.store.svc:5433/results?sslmode=require"
    for text in (str(settings), repr(settings), settings.display()):
        assert PASSWORD not in text and ENCODED not in text
    assert {PASSWORD, ENCODED, URI} <= set(settings.secrets())
    kwargs = settings.connect_kwargs()
    assert (kwargs["password"], kwargs["database"], kwargs["ssl"]) == (
        PASSWORD,
        "results",
        "require",
    )


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (f"mysql://app:{ENCODED}@db/x", "must start with postgresql://"),
        (f"postgresql://app:{ENCODED}@db:port/x", "is not a valid postgresql:// URI"),
        (
            f"postgresql://app:{ENCODED}@db/x?sslcert=/c",
            "parameters the runner does not support: sslcert",
        ),
        (f"postgresql://:{ENCODED}@db/x", "names no user"),
        (f"postgresql://app:{ENCODED}@db/x?sslmode=sometimes", "sslmode 'sometimes' is not one of"),
    ],
)
def test_a_bad_uri_is_named_never_shown(uri: str, problem: str) -> None:
    with pytest.raises(StoreSettingsError) as raised:
        StoreSettings.from_uri(uri, source=environment.STORE_URI)
    assert problem in str(raised.value)
    assert ENCODED not in str(raised.value) and PASSWORD not in str(raised.value)


def test_the_env_contract_by_uri_or_by_parts() -> None:
    assert StoreSettings.from_env({}) is None
    by_uri = StoreSettings.from_env(
        {environment.STORE_URI: URI, environment.STORE_SSLMODE: "disable"}
    )
    assert by_uri is not None and by_uri.sslmode == "disable"  # the variable wins
    assert by_uri.connect_kwargs()["ssl"] is False
    parts = {
        environment.STORE_HOST: "db",
        environment.STORE_USER: "app",
        environment.STORE_PASSWORD: PASSWORD,
    }
    by_parts = StoreSettings.from_env(parts)
    assert by_parts is not None
    assert (by_parts.port, by_parts.dbname, by_parts.password) == (5432, "app", PASSWORD)
    assert "ssl" not in by_parts.connect_kwargs()  # asyncpg's default: prefer
    # A CloudNativePG app Secret sets both: the uri wins (its own password included).
    both = StoreSettings.from_env({**parts, environment.STORE_URI: URI})
    assert both is not None and both.display() == StoreSettings.from_uri(URI).display()
    # A Secret imported whole (envFrom with the prefix) is the only source when present.
    imported = StoreSettings.from_env(
        {
            **parts,
            environment.STORE_SECRET_PREFIX + "host": "pg.example",
            environment.STORE_SECRET_PREFIX + "username": "owner",
            environment.STORE_SECRET_PREFIX + "password": PASSWORD,
            environment.STORE_SECRET_PREFIX + "dbname": "evals",
        }
    )
    assert imported is not None
    assert (imported.host, imported.user, imported.dbname) == ("pg.example", "owner", "evals")
    with pytest.raises(StoreSettingsError, match="EVAL_STORE_PORT='54x' is not a port"):
        StoreSettings.from_env({**parts, environment.STORE_PORT: "54x"})
    with pytest.raises(StoreSettingsError, match="EVAL_STORE_USER is not"):
        StoreSettings.from_env({environment.STORE_HOST: "db"})


def test_verify_modes_check_the_chain_and_verify_full_the_name(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    env = {environment.STORE_URI: URI, environment.STORE_SSLROOTCERT: str(bundle)}
    for mode, hostname in (("verify-full", True), ("verify-ca", False), ("require", False)):
        settings = StoreSettings.from_env({**env, environment.STORE_SSLMODE: mode})
        assert settings is not None
        context = settings.connect_kwargs()["ssl"]
        assert isinstance(context, ssl.SSLContext), mode
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is hostname
    missing = StoreSettings.from_uri(URI, sslmode="verify-ca", sslrootcert=str(tmp_path / "no"))
    with pytest.raises(StoreSettingsError, match="cannot read a CA bundle there"):
        missing.connect_kwargs()


def test_url_passwords_are_redacted_as_written_and_decoded() -> None:
    secrets = Secrets()
    secrets.add_url(URI)
    secrets.add_url("not a url")
    secrets.add_url("redis://127.0.0.1:6379/0")  # no password: nothing to hide
    text = f"{URI} | {PASSWORD} | {ENCODED} | redis://127.0.0.1:6379/0"
    assert secrets.redact(text) == "[redacted] | [redacted] | [redacted] | redis://127.0.0.1:6379/0"


def test_the_shipped_migrations_only_add() -> None:
    destructive = re.compile(
        r"\b(DROP|TRUNCATE|DELETE|UPDATE|RENAME)\b|ALTER\s+COLUMN\s+\w+\s+TYPE", re.IGNORECASE
    )
    for migration in MIGRATIONS:
        code = "\n".join(line.split("--", 1)[0] for line in migration.sql.splitlines())
        code = re.sub(r"'(?:[^']|'')*'", "''", code)  # comments on objects are not statements
        assert not destructive.search(code), migration.label


EVALUATION = Evaluation.model_validate(
    {
        "metadata": {"name": "arith", "namespace": "team"},
        "spec": {
            "model": {"name": "m", "baseURL": "http://model:8000/v1"},
            "dataset": {"builtin": "arithmetic"},
            "task": {"scorers": [{"type": "exact_match"}]},
        },
    }
)
IDENTITY = RunIdentity("uid", "run-1", "team", "arith")
PRICING = Pricing(input_per_million_usd="1", output_per_million_usd="2")
SAMPLE = Sample(id=7, input="What is 1 + 1?", target="2", record={"input": "What is 1 + 1?"})
MESSAGES = [{"role": "user", "content": "What is 1 + 1?"}]


def row_of(result: SampleResult) -> dict[str, object]:
    return dict(zip(COLUMNS, sample_row(result, IDENTITY, 3, 2, PRICING), strict=True))


def test_the_row_of_a_scored_and_of_an_errored_sample() -> None:
    spend = Spend(requests=3, timed_out=1, cost=Decimal("0.5"))
    completion = Completion("2\x00", 10, 1, False, 0.25, spend)
    scored = row_of(SampleResult(SAMPLE, MESSAGES, completion, {"exact_match": 1.0}))
    assert scored["sample_id"] == 7 and (scored["shard"], scored["attempt"]) == (3, 2)
    assert scored["response"] == "2\ufffd"  # PostgreSQL text holds no NUL
    assert json.loads(str(scored["scores"])) == {"exact_match": 1.0}
    assert (scored["requests"], scored["timed_out"], scored["cost_usd"]) == (3, 1, Decimal("0.5"))
    assert (scored["cache_hit"], scored["cache_saved_usd"], scored["latency_ms"]) == (
        False,
        Decimal(0),
        250.0,
    )
    assert scored["input_hash"] == input_hash(SAMPLE) and scored["prompt_hash"] == prompt_hash(
        MESSAGES
    )
    # What the model was asked, for the dashboard: the messages as JSON.
    assert json.loads(str(scored["prompt"])) == MESSAGES
    errored = row_of(
        SampleResult(
            SAMPLE, MESSAGES, error_class="http_429", error="slow down", spend=Spend(requests=8)
        )
    )
    assert (errored["response"], errored["scores"], errored["requests"]) == (None, "{}", 8)
    assert (errored["error_class"], errored["error_message"]) == ("http_429", "slow down")
    hit = row_of(
        SampleResult(SAMPLE, MESSAGES, Completion("2", 10, 1, cache_hit=True), {"exact_match": 1})
    )
    assert (hit["cache_hit"], hit["requests"], hit["cost_usd"]) == (True, 0, Decimal(0))
    assert hit["cache_saved_usd"] == Decimal("0.000012")  # 10 * $1/M + 1 * $2/M


def test_what_stored_samples_carry_into_the_summary() -> None:
    stored = [
        StoredSample(0, 1, "i", "p", {"e": 1.0}, None, 1, 10, 2, False, 0, Decimal("0.1")),
        StoredSample(1, 1, "i", "p", {}, "timeout", 3, 0, 0, False, 3, Decimal("0.3")),
        StoredSample(
            2, 2, "i", "p", {"e": 0.0}, None, 0, 7, 5, True, cache_hit=True,
            cache_saved=Decimal("0.05"),
        ),
    ]  # fmt: skip
    usage = carried_usage(stored)
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.timed_out) == (
        4,
        10,
        2,
        3,
    )
    assert (usage.cache_hits, usage.truncated) == (1, 1)
    assert (usage.cost_usd, usage.cache_saved_usd) == ("0.4", "0.05")


def test_stored_samples_that_are_not_this_shards_are_conflicts() -> None:
    other = Sample(id=8, input="What is 2 + 2?", target="4", record={"input": "What is 2 + 2?"})
    same = StoredSample(7, 1, input_hash(SAMPLE), prompt_hash(MESSAGES), {}, None)
    work = [(SAMPLE, MESSAGES), (other, [{"role": "user", "content": "What is 2 + 2?"}])]
    assert conflicts({7: same}, work) == []
    changed = StoredSample(7, 1, input_hash(SAMPLE), prompt_hash([]), {}, None)
    stray = StoredSample(99, 1, "i", "p", {}, None)
    assert conflicts({7: changed, 99: stray}, work) == [7, 99]


def test_a_resumed_summary_charges_nothing_again() -> None:
    resumed = ResumedSamples(samples=5, usage=ShardUsage(requests=5, cost_usd="1.5"))
    summary = ShardSummary(usage=ShardUsage(requests=2, cost_usd="0.5"), resumed=resumed)
    assert summary.spent() == (Decimal("0.5"), 2)  # what the ledger and the budget count
    again = ShardSummary.model_validate_json(summary.to_message())
    assert again.resumed == resumed


def test_cache_savings_add_up_and_judges_have_none() -> None:
    a = ShardSummary(usage=ShardUsage(cache_hits=2, cache_saved_usd="0.25", judge=ShardUsage()))
    b = ShardSummary(usage=ShardUsage(cache_hits=1, cache_saved_usd="0.5"))
    usage = aggregate([a, b], []).usage
    assert (usage.cache_hits, usage.cache_saved_usd) == (3, "0.75")
    dumped = usage.model_dump(by_alias=True)
    assert dumped["cacheSavedUSD"] == "0.75" and "cacheSavedUSD" not in dumped["judge"]


def test_local_identities() -> None:
    uid = local_evaluation_uid("team", "arith")
    assert uid == local_evaluation_uid("team", "arith") != local_evaluation_uid("other", "arith")
    assert local_evaluation_uid(None, "arith") == local_evaluation_uid("default", "arith")
    digest = spec_hash(EVALUATION.spec)
    assert len(digest) == 64 and digest == spec_hash(EVALUATION.model_copy(deep=True).spec)
    first, second = new_local_run(digest), new_local_run(digest)
    assert first != second and first.startswith(f"local-{digest[:12]}-")


def test_a_pods_identity_comes_from_its_job() -> None:
    env = {
        environment.EVALUATION_UID: "u-1",
        environment.RUN: "arith-7f3a",
        environment.SUITE: "nightly",
    }
    identity = RunIdentity.from_env(env, EVALUATION)
    assert identity == RunIdentity("u-1", "arith-7f3a", "team", "arith", "nightly")
    with pytest.raises(PermanentError, match="EVAL_EVALUATION_UID and EVAL_RUN"):
        RunIdentity.from_env({environment.RUN: "arith-7f3a"}, EVALUATION)


def test_writer_settings_from_env() -> None:
    assert WriterSettings.from_env({}) == WriterSettings()
    tuned = WriterSettings.from_env(
        {environment.STORE_BATCH_ROWS: "2000", environment.STORE_UNAVAILABLE_AFTER_SECONDS: "30"}
    )
    assert (tuned.batch_rows, tuned.unavailable_after_seconds) == (2000, 30.0)
    for bad in ({environment.STORE_BATCH_ROWS: "0"}, {environment.STORE_BATCH_ROWS: "many"}):
        with pytest.raises(PermanentError) as raised:
            WriterSettings.from_env(bad)
        assert raised.value.reason == "StoreConfigInvalid"


async def test_an_outage_is_retried_with_growing_jittered_waits_up_to_its_bound() -> None:
    now = [0.0]
    waits: list[float] = []
    dropped: list[BaseException] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def drop(err: BaseException) -> None:
        dropped.append(err)

    outage = Outage(10, "postgresql://app@db:5432/x", clock=lambda: now[0], sleep=sleep,
                    jitter=lambda: 1.0)  # fmt: skip
    failures = [ConnectionRefusedError("refused")] * 3

    async def flaky() -> str:
        if failures:
            raise failures.pop()
        return "written"

    assert await outage.call(flaky, "writing samples", drop) == "written"
    assert waits == [0.1, 0.2, 0.4] and len(dropped) == 3
    assert outage.since is None  # the store is back: the next outage starts from zero

    async def down() -> str:
        raise ConnectionRefusedError("refused")

    waits.clear()
    with pytest.raises(StoreUnavailable) as raised:
        await outage.call(down, "writing samples", drop)
    assert sum(waits) == pytest.approx(10)  # never waits past the bound
    assert max(waits) <= 5.0  # the backoff's cap
    assert raised.value.message.startswith(
        "the store postgresql://app@db:5432/x failed for 10 s while writing samples "
        "(the bound is 10 s): ConnectionRefusedError: refused"
    )


async def test_jitter_spreads_the_waits_over_the_upper_half() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    outage = Outage(100, "db", clock=lambda: 0.0, sleep=sleep, jitter=lambda: 0.0)
    failures = [OSError("down")]

    async def once() -> None:
        if failures:
            raise failures.pop()

    async def ignore(err: BaseException) -> None:
        pass

    await outage.call(once, "opening the run", ignore)
    assert waits == [0.05]  # half of the first 0.1 s
