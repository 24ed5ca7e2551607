"""Status as a pure function of the observation: phases, conditions, aggregation, verdicts."""

import pytest

from eval_api.aggregate import aggregate
from eval_api.shard import ShardSummary, ShardUsage
from eval_operator import conditions as cond
from eval_operator.status import Observation, desired_status, shard_summaries
from tests.support.factories import evaluation, job, pod, summary

RUN = "quick-abc123"
NOW = "2026-11-23T10:10:00Z"


def observe(**kwargs):
    return Observation(run=RUN, rerun_token=None, now=NOW, **kwargs)


def condition(status, type_):
    return cond.find(status["conditions"], type_)


def test_no_job_yet_is_pending_and_creating():
    status = desired_status(evaluation(), observe())
    assert status["phase"] == "Pending"
    assert status["jobName"] == RUN
    assert status["observedGeneration"] == 1
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Progressing")["reason"] == "Creating"
    assert condition(status, "Passed")["status"] == "Unknown"


def test_missing_secret_is_reported_and_not_progressing():
    status = desired_status(
        evaluation(), observe(blocked=("SecretNotFound", "Secret default/model-key does not exist"))
    )
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert "model-key" in ready["message"]
    assert condition(status, "Progressing")["status"] == "False"
    assert status["phase"] == "Pending"


def test_running_progress_comes_from_live_and_finished_shards():
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 8, 10, shards=2)), pod(RUN, 1)]
    live = {f"{RUN}-1-0": summary(1, 3, 10, shards=2, state="running")}
    status = desired_status(
        evaluation(spec=_sharded(2)), observe(job=job(RUN, active=1), pods=pods, live=live)
    )
    assert status["phase"] == "Running"
    assert status["progress"] == {"total": 20, "completed": 13, "failed": 0, "summary": "13/20"}
    assert condition(status, "Progressing")["status"] == "True"
    assert condition(status, "Ready")["message"] == "13/20 samples done"


def test_progress_summary_is_open_ended_until_every_shard_reported():
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 8, 10, shards=2))]
    status = desired_status(
        evaluation(spec=_sharded(2)), observe(job=job(RUN, active=1), pods=pods)
    )
    assert status["progress"]["summary"] == "10/?"


def test_succeeded_run_has_exact_results_usage_and_passes():
    pods = [
        pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2)),
        pod(RUN, 1, phase="Succeeded", termination=summary(1, 8, 10, shards=2)),
    ]
    status = desired_status(
        evaluation(spec=_sharded(2)), observe(job=job(RUN, complete=True), pods=pods)
    )
    assert status["phase"] == "Succeeded"
    main = status["results"][0]
    assert main["name"] == "exact_match" and main["n"] == 20
    assert main["value"] == pytest.approx(17 / 20)
    # sample stderr of 17 ones and 3 zeros: sqrt(p(1-p) * n/(n-1) / n)
    assert main["stderr"] == pytest.approx(((0.85 * 0.15 * 20 / 19) / 20) ** 0.5, abs=1e-6)
    lo, hi = main["ci95"]
    assert lo == pytest.approx(0.85 - 1.959964 * main["stderr"], abs=1e-5)
    assert hi == pytest.approx(min(1.0, 0.85 + 1.959964 * main["stderr"]), abs=1e-5)
    assert status["usage"] == {
        "requests": 20,
        "inputTokens": 200,
        "outputTokens": 40,
        "cacheHits": 0,
        "costUSD": "0",
    }
    assert status["startTime"] == "2026-11-23T10:00:00Z"
    assert status["completionTime"] == "2026-11-23T10:05:00Z"
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Succeeded")["status"] == "True"
    passed = condition(status, "Passed")
    assert (passed["status"], passed["reason"]) == ("True", "ThresholdsMet")
    assert "exact_match 0.85 >= 0.8" in passed["message"]


def test_threshold_not_met():
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 5, 10))]
    status = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=pods))
    passed = condition(status, "Passed")
    assert (passed["status"], passed["reason"]) == ("False", "ThresholdsNotMet")


def test_no_thresholds_passes_with_reason():
    ev = evaluation()
    ev["spec"]["thresholds"] = []
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 5, 10))]
    status = desired_status(ev, observe(job=job(RUN, complete=True), pods=pods))
    assert condition(status, "Passed")["reason"] == "NoThresholds"


def test_retried_index_counts_only_its_latest_attempt():
    first = pod(
        RUN,
        0,
        phase="Failed",
        attempt=0,
        created="2026-11-23T10:00:00Z",
        termination=summary(0, 2, 10, state="error", reason="RunnerError", message="boom"),
        exit_code=1,
    )
    retry = pod(
        RUN,
        0,
        phase="Succeeded",
        attempt=1,
        created="2026-11-23T10:01:00Z",
        termination=summary(0, 9, 10),
    )
    summaries = shard_summaries([retry, first], {})
    assert summaries[0].completed == 10 and summaries[0].state == "done"
    status = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=[first, retry]))
    assert status["results"][0]["n"] == 10
    assert status["results"][0]["value"] == pytest.approx(0.9)


def test_failed_run_reports_the_runners_reason_and_keeps_partial_results():
    pods = [
        pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2)),
        pod(
            RUN,
            1,
            phase="Failed",
            exit_code=3,
            termination=summary(
                1,
                0,
                0,
                shards=2,
                state="error",
                reason="DatasetChecksumMismatch",
                message="sha256 of https://x/data.jsonl is abc, expected def",
            ),
        ),
    ]
    status = desired_status(
        evaluation(spec=_sharded(2)),
        observe(job=job(RUN, failed=True, failed_indexes="1"), pods=pods),
    )
    assert status["phase"] == "Failed"
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DatasetChecksumMismatch")
    assert ready["message"].startswith("shard 1: sha256")
    assert condition(status, "Stalled")["status"] == "True"
    assert condition(status, "Passed")["status"] == "False"
    assert status["results"][0]["n"] == 10


def test_failed_job_without_runner_summary_uses_the_job_condition():
    status = desired_status(evaluation(), observe(job=job(RUN, failed=True, failed_indexes="0")))
    ready = condition(status, "Ready")
    assert ready["reason"] == "FailedIndexes"
    assert "failed shards: 0" in ready["message"]


def test_suspended_job_is_pending():
    status = desired_status(evaluation(), observe(job=job(RUN, suspend=True)))
    assert status["phase"] == "Pending"
    assert condition(status, "Progressing")["reason"] == "Suspended"


def test_cancel_fails_the_run():
    ev = evaluation()
    ev["spec"]["cancel"] = True
    status = desired_status(ev, observe(job=job(RUN, active=1)))
    assert status["phase"] == "Failed"
    assert condition(status, "Ready")["reason"] == "Cancelled"


def test_invalid_spec_is_a_condition():
    status = desired_status(evaluation(), observe(invalid="spec.thresholds.0: names no scorer"))
    assert status["phase"] == "Failed"
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert condition(status, "Stalled")["status"] == "True"


def test_last_transition_time_is_kept_when_status_does_not_change():
    pods = [pod(RUN, 0)]
    live = {f"{RUN}-0-0": summary(0, 3, 10, state="running")}
    first = desired_status(evaluation(), observe(job=job(RUN, active=1), pods=pods, live=live))
    later = Observation(
        run=RUN,
        rerun_token=None,
        now="2026-11-23T11:00:00Z",
        job=job(RUN, active=1),
        pods=pods,
        live=live,
    )
    second = desired_status(evaluation(status=first), later)
    for type_ in ("Ready", "Progressing", "Passed"):
        assert condition(second, type_)["lastTransitionTime"] == NOW
    done = Observation(
        run=RUN,
        rerun_token=None,
        now="2026-11-23T12:00:00Z",
        job=job(RUN, complete=True),
        pods=[pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))],
    )
    third = desired_status(evaluation(status=second), done)
    assert condition(third, "Ready")["lastTransitionTime"] == "2026-11-23T12:00:00Z"
    assert condition(third, "Stalled")["lastTransitionTime"] == NOW  # False all along


def test_status_is_idempotent():
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    obs = observe(job=job(RUN, complete=True), pods=pods)
    first = desired_status(evaluation(), obs)
    assert desired_status(evaluation(status=first), obs) == first


def test_finished_run_keeps_its_results_when_job_and_pods_are_gone():
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    done = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=pods))
    later = desired_status(evaluation(status=done), observe())
    assert later["phase"] == "Succeeded"
    assert later["results"] == done["results"]
    assert condition(later, "Ready")["status"] == "True"


def test_spec_change_after_finish_does_not_rerun_but_says_how():
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    done = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=pods))
    changed = evaluation(status=done, generation=2)
    status = desired_status(changed, observe())
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == 2
    assert status["runGeneration"] == 1
    assert "evals.io/rerun" in condition(status, "Ready")["message"]
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_rerun_starts_a_clean_status():
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    done = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=pods))
    rerun = Observation(run="quick-new999", rerun_token="1", now=NOW)
    status = desired_status(evaluation(status=done, generation=2), rerun)
    assert status["phase"] == "Pending"
    assert status["jobName"] == "quick-new999"
    assert status["rerunToken"] == "1"
    assert "results" not in status and "completionTime" not in status
    assert status["runGeneration"] == 2


def test_aggregate_of_shards_equals_single_shard():
    one = aggregate([summary(0, 17, 20)], ["exact_match", "numeric"])
    two = aggregate([summary(0, 9, 10), summary(1, 8, 10)], ["exact_match", "numeric"])
    assert one.results == two.results


def _sharded(shards):
    import copy

    from tests.support.factories import BASE_SPEC

    spec = copy.deepcopy(BASE_SPEC)
    spec["execution"] = {"shards": shards}
    return spec


def test_many_errored_samples_are_named_in_the_messages():
    done = summary(0, 80, 100, failed=10)
    done.errors = {"http_500": 6, "timeout": 3, "judge_unparsable": 1}
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    status = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=pods))
    assert status["progress"]["failed"] == 10
    expected = "10 of 100 finished samples errored (10.0%, never scored): http_500=6, timeout=3"
    assert expected in condition(status, "Ready")["message"]
    assert expected in condition(status, "Progressing")["message"]
    running = summary(0, 40, 100, state="running")
    running.completed, running.failed, running.errors = 45, 5, {"http_429": 5}
    live = {f"{RUN}-0-0": running}
    status = desired_status(
        evaluation(), observe(job=job(RUN, active=1), pods=[pod(RUN, 0)], live=live)
    )
    assert (
        "5 of 50 finished samples errored (10.0%, never scored): http_429=5"
        in (condition(status, "Progressing")["message"])
    )


def test_a_few_errored_samples_are_not_a_note():
    done = summary(0, 90, 100, failed=5)  # 5% is the documented fraction: not above it
    done.errors = {"http_500": 5}
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    status = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=pods))
    assert condition(status, "Ready")["message"] == "the run finished"


def test_budget_exceeded_fails_the_run_and_keeps_the_results_so_far():
    stopped = summary(
        1,
        4,
        10,
        shards=2,
        state="error",
        reason="BudgetExceeded",
        message="stopped at the shard's share of the budget; spent $0.4 of $0.5",
    )
    pods = [
        pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2)),
        pod(RUN, 1, phase="Failed", exit_code=3, termination=stopped),
    ]
    status = desired_status(
        evaluation(spec=_sharded(2)),
        observe(job=job(RUN, failed=True, failed_indexes="1"), pods=pods),
    )
    assert status["phase"] == "Failed"
    ready = condition(status, "Ready")
    assert (ready["reason"], ready["message"]) == (
        "BudgetExceeded",
        "shard 1: stopped at the shard's share of the budget; spent $0.4 of $0.5",
    )
    # Shard 0's 10 samples and the 4 shard 1 scored before it stopped.
    assert status["results"][0]["n"] == 14
    assert status["results"][0]["value"] == pytest.approx(13 / 14)
    assert status["progress"]["completed"] == 14


def test_judge_usage_is_reported_apart():
    done = summary(0, 9, 10)
    done.usage.judge = ShardUsage(requests=10, input_tokens=500, output_tokens=20, cost_usd="0.01")
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    status = desired_status(evaluation(), observe(job=job(RUN, complete=True), pods=pods))
    assert status["usage"]["judge"] == {
        "requests": 10,
        "inputTokens": 500,
        "outputTokens": 20,
        "costUSD": "0.01",
    }


def test_the_termination_message_fits_with_many_error_classes_and_judge_usage():
    big = summary(0, 500, 1000, failed=400, message="x" * 5000, state="error", reason="R")
    big.errors = {f"judge_http_{400 + i}": i + 1 for i in range(200)} | {"judge_unparsable": 500}
    big.usage.judge = ShardUsage(requests=1000, input_tokens=10**9, cost_usd="123.456")
    message = big.to_message()
    assert len(message.encode()) <= 4096
    parsed = ShardSummary.model_validate_json(message)
    assert parsed.scores == big.scores and parsed.usage == big.usage
    assert sum(parsed.errors.values()) == sum(big.errors.values())
    assert parsed.errors["judge_unparsable"] == 500 and "other" in parsed.errors
    assert parsed.message is not None and parsed.message.endswith("...")


def test_a_finished_job_waits_for_its_last_pod_to_be_observed():
    """Jobs and pods come on separate watches: Complete may arrive before the last pod's
    termination message, and judging then would drop that shard's results."""
    done = pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2))
    lagging = pod(RUN, 1)  # still Running in our view, though the Job says it completed
    finished = job(RUN, complete=True)
    finished["status"]["completedIndexes"] = "0-1"
    soon = "2026-11-23T10:05:10Z"  # 10 s after the Job's completionTime
    early = desired_status(
        evaluation(spec=_sharded(2)),
        Observation(run=RUN, rerun_token=None, now=soon, job=finished, pods=[done, lagging]),
    )
    assert early["phase"] == "Running"
    assert condition(early, "Ready")["status"] == "False"

    arrived = pod(RUN, 1, phase="Succeeded", termination=summary(1, 8, 10, shards=2))
    settled = desired_status(
        evaluation(spec=_sharded(2)), observe(job=finished, pods=[done, arrived])
    )
    assert settled["phase"] == "Succeeded"
    assert settled["results"][0]["n"] == 20

    # A pod that never reports (deleted) holds the run open for a bounded time only.
    later = Observation(
        run=RUN, rerun_token=None, now="2026-11-23T10:05:31Z", job=finished, pods=[done, lagging]
    )
    assert desired_status(evaluation(spec=_sharded(2)), later)["phase"] == "Succeeded"


def test_retry_created_in_the_same_second_still_counts_as_latest():
    crashed = pod(RUN, 0, phase="Failed", attempt=9, exit_code=137)
    retry = pod(RUN, 0, phase="Succeeded", attempt=1, termination=summary(0, 9, 10))
    assert crashed["metadata"]["creationTimestamp"] == retry["metadata"]["creationTimestamp"]
    assert crashed["metadata"]["name"] > retry["metadata"]["name"]
    summaries = shard_summaries([crashed, retry], {})
    assert summaries[0].completed == 10
