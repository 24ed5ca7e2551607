"""Status as a pure function of the observation: phases, conditions, aggregation, verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from eval_api.aggregate import aggregate
from eval_api.shard import ShardSummary, ShardUsage
from eval_operator import conditions as cond
from eval_operator.pods import pod_view, stuck
from eval_operator.status import Observation, desired_status
from tests.support.factories import job, plan, pod, summary

RUN = "quick-abc123"
NOW = "2026-11-23T10:10:00Z"


def observe(*, pods: list[dict[str, Any]] = (), now: str = NOW, **kwargs: Any) -> Observation:
    kwargs.setdefault("generation", 1)
    views = [pod_view(p) for p in pods]
    return Observation(run=RUN, rerun_token=None, now=now, pods=views, **kwargs)


def status_of(obs: Observation, old: dict[str, Any] | None = None) -> dict[str, Any]:
    return desired_status(old or {}, obs).status


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return cond.condition_of(status, type_) or None


def live(**summaries: ShardSummary) -> dict[str, ShardSummary]:
    return {name.replace("_", "-"): s for name, s in summaries.items()}


def two_shards(**kwargs: Any) -> dict[str, Any]:
    return job(RUN, run_plan=plan(RUN, shards=2), **kwargs)


def test_no_job_yet_is_pending_and_creating() -> None:
    status = status_of(observe())
    assert status["phase"] == "Pending"
    assert status["jobName"] == RUN
    assert status["observedGeneration"] == 1
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Progressing")["reason"] == "Creating"
    assert condition(status, "Passed")["status"] == "Unknown"


def test_a_missing_configmap_is_reported_and_not_progressing() -> None:
    blocked = ("ConfigMapNotFound", "ConfigMap default/qa does not exist")
    status = status_of(observe(blocked=blocked))
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ConfigMapNotFound")
    assert condition(status, "Progressing")["status"] == "False"
    assert status["phase"] == "Pending"


def test_running_progress_comes_from_live_and_finished_shards() -> None:
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 8, 10, shards=2)), pod(RUN, 1)]
    status = status_of(
        observe(
            job=two_shards(active=1),
            plan=plan(RUN, shards=2),
            pods=pods,
            live={f"{RUN}-1-0": summary(1, 3, 10, shards=2, state="running")},
        )
    )
    assert status["phase"] == "Running"
    assert status["progress"] == {"total": 20, "completed": 13, "failed": 0, "summary": "13/20"}
    assert condition(status, "Progressing")["status"] == "True"
    assert condition(status, "Ready")["message"] == "13/20 samples done"


def test_progress_summary_is_open_ended_until_every_shard_reported() -> None:
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 8, 10, shards=2))]
    status = status_of(observe(job=two_shards(active=1), plan=plan(RUN, shards=2), pods=pods))
    assert status["progress"]["summary"] == "10/?"


def test_succeeded_run_has_exact_results_usage_and_passes() -> None:
    pods = [
        pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2)),
        pod(RUN, 1, phase="Succeeded", termination=summary(1, 8, 10, shards=2)),
    ]
    status = status_of(observe(job=two_shards(complete=True), plan=plan(RUN, shards=2), pods=pods))
    assert status["phase"] == "Succeeded"
    main = status["results"][0]
    assert main["name"] == "exact_match" and main["n"] == 20
    assert main["value"] == pytest.approx(17 / 20)
    assert main["stderr"] == pytest.approx(((0.85 * 0.15 * 20 / 19) / 20) ** 0.5, abs=1e-6)
    assert status["usage"] == {
        "requests": 20,
        "inputTokens": 200,
        "outputTokens": 40,
        "promptCacheTokens": 0,
        "cacheHits": 0,
        "timedOut": 0,
        "truncated": 0,
        "costUSD": "0",
        "cacheSavedUSD": "0",
    }
    assert status["startTime"] == "2026-11-23T10:00:00Z"
    assert status["completionTime"] == "2026-11-23T10:05:00Z"
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Succeeded")["status"] == "True"
    passed = condition(status, "Passed")
    assert (passed["status"], passed["reason"]) == ("True", "ThresholdsMet")
    assert "exact_match 0.85 >= 0.8" in passed["message"]


def test_threshold_not_met_and_no_thresholds() -> None:
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 5, 10))]
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    passed = condition(status, "Passed")
    assert (passed["status"], passed["reason"]) == ("False", "ThresholdsNotMet")
    none = plan(RUN, thresholds=())
    status = status_of(observe(job=job(RUN, complete=True, run_plan=none), plan=none, pods=pods))
    assert condition(status, "Passed")["reason"] == "NoThresholds"


def test_a_run_is_judged_by_its_plan_never_the_live_spec() -> None:
    """Issue 7 item 2: the scorers, thresholds and shard count come from the run's plan."""
    frozen = plan(RUN, shards=2, scorers=("exact_match", "numeric"), thresholds=("numeric >= 0.5",))
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 4, 10, shards=2))]
    running = status_of(observe(job=two_shards(active=1), plan=frozen, pods=pods))
    assert running["progress"]["summary"] == "10/?"  # shards from the plan: one still to come
    pods.append(pod(RUN, 1, phase="Succeeded", termination=summary(1, 6, 10, shards=2)))
    done = status_of(observe(job=two_shards(complete=True), plan=frozen, pods=pods))
    assert [r["name"] for r in done["results"]] == ["exact_match", "numeric"]
    assert done["progress"]["summary"] == "20/20"
    passed = condition(done, "Passed")
    assert (passed["status"], passed["message"]) == ("True", "numeric 0.5 >= 0.5: ok")


def test_a_spec_change_during_a_run_is_reported_and_the_run_goes_on() -> None:
    frozen = plan(RUN, generation=1)
    status = status_of(observe(job=job(RUN, active=1), plan=frozen, generation=3))
    assert status["phase"] == "Running"
    assert status["observedGeneration"] == 3 and status["runGeneration"] == 1
    message = condition(status, "Ready")["message"]
    assert "the spec changed after this run started (generation 1 -> 3)" in message
    assert "evals.io/rerun" in message


def test_retried_index_scores_its_latest_attempt_and_usage_counts_every_attempt() -> None:
    """Issue 7 item 4: every attempt was paid for, but only the last one's scores count."""
    first = pod(
        RUN, 0, phase="Failed", attempt=0, created="2026-11-23T10:00:00Z", exit_code=1,
        termination=summary(0, 2, 10, state="error", reason="RunnerError", message="boom"),
    )  # fmt: skip
    retry = pod(
        RUN, 0, phase="Succeeded", attempt=1, created="2026-11-23T10:01:00Z",
        termination=summary(0, 9, 10),
    )  # fmt: skip
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=[first, retry]))
    assert status["results"][0]["n"] == 10
    assert status["results"][0]["value"] == pytest.approx(0.9)
    # The crashed attempt's 2 scored samples were sent (and billed) too: 10 + 10 requests.
    assert status["usage"]["requests"] == 20
    assert status["usage"]["inputTokens"] == 200


def test_retry_created_in_the_same_second_still_counts_as_latest() -> None:
    crashed = pod(RUN, 0, phase="Failed", attempt=9, exit_code=137)
    retry = pod(RUN, 0, phase="Succeeded", attempt=1, termination=summary(0, 9, 10))
    assert crashed["metadata"]["name"] > retry["metadata"]["name"]  # name order would be wrong
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=[crashed, retry]))
    assert status["phase"] == "Succeeded"
    assert status["results"][0]["value"] == pytest.approx(0.9)


def test_failed_run_reports_the_runners_reason_and_keeps_partial_results() -> None:
    checksum = summary(
        1, 0, 0, shards=2, state="error", reason="DatasetChecksumMismatch",
        message="sha256 of https://x/data.jsonl is abc, expected def",
    )  # fmt: skip
    pods = [
        pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2)),
        pod(RUN, 1, phase="Failed", exit_code=3, termination=checksum),
    ]
    status = status_of(
        observe(
            job=two_shards(failed=True, failed_indexes="1", completed_indexes="0"),
            plan=plan(RUN, shards=2),
            pods=pods,
        )
    )
    assert status["phase"] == "Failed"
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DatasetChecksumMismatch")
    assert ready["message"].startswith("shard 1: sha256")
    assert condition(status, "Stalled")["status"] == "True"
    assert condition(status, "Passed")["status"] == "False"
    assert status["results"][0]["n"] == 10


def test_failed_job_without_runner_summary_uses_the_job_condition() -> None:
    status = status_of(observe(job=job(RUN, failed=True, failed_indexes="0"), plan=plan(RUN)))
    ready = condition(status, "Ready")
    assert ready["reason"] == "FailedIndexes"
    assert "failed shards: 0" in ready["message"]


def test_a_complete_job_without_every_summary_is_never_succeeded() -> None:
    """Issue 7 item 5: an image that exits 0 and writes nothing is a failure, not a pass."""
    pods = [
        pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2)),
        pod(RUN, 1, phase="Succeeded"),  # terminated, exit 0, no termination message
    ]
    done = two_shards(complete=True, completed_indexes="0-1")
    status = status_of(observe(job=done, plan=plan(RUN, shards=2), pods=pods))
    assert status["phase"] == "Failed"
    ready = condition(status, "Ready")
    assert ready["reason"] == "SummaryMissing"
    assert f"pod {RUN}-1-0 ended without a shard summary" in ready["message"]
    assert condition(status, "Passed")["status"] == "False"
    # With no pod at all for a shard, after the bounded wait, the same.
    later = "2026-11-23T10:06:00Z"
    status = status_of(observe(job=done, plan=plan(RUN, shards=2), pods=pods[:1], now=later))
    assert condition(status, "Ready")["reason"] == "SummaryMissing"
    assert "shard 1: no pod" in condition(status, "Ready")["message"]


def test_a_finished_job_waits_for_its_last_pod_to_be_observed() -> None:
    """Jobs and pods come on separate watches: Complete may arrive before the last pod's
    termination message, and judging then would drop that shard's results."""
    done = pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2))
    lagging = pod(RUN, 1)  # still Running in our view, though the Job says it completed
    finished = two_shards(complete=True, completed_indexes="0-1")
    frozen = plan(RUN, shards=2)
    early = desired_status(
        {}, observe(job=finished, plan=frozen, pods=[done, lagging], now="2026-11-23T10:05:10Z")
    )
    assert early.status["phase"] == "Running"
    assert early.recheck_after == pytest.approx(20)  # the bounded wait's remaining seconds
    arrived = pod(RUN, 1, phase="Succeeded", termination=summary(1, 8, 10, shards=2))
    settled = status_of(observe(job=finished, plan=frozen, pods=[done, arrived]))
    assert settled["phase"] == "Succeeded"
    assert settled["results"][0]["n"] == 20
    # A pod that never reports holds the run open for a bounded time only, and then the run
    # is not a success.
    late = status_of(
        observe(job=finished, plan=frozen, pods=[done, lagging], now="2026-11-23T10:05:31Z")
    )
    assert (late["phase"], condition(late, "Ready")["reason"]) == ("Failed", "SummaryMissing")


def test_a_run_past_its_deadline_says_so_not_that_its_shards_were_stopped() -> None:
    stopped = summary(0, 3, 10, state="error", reason="Terminated", message="SIGTERM")
    late = job(RUN, failed=True)
    late["status"]["conditions"][0].update(
        reason="DeadlineExceeded", message="Job was active longer than specified deadline"
    )
    pods = [pod(RUN, 0, phase="Failed", exit_code=143, termination=stopped)]
    status = status_of(observe(job=late, plan=plan(RUN), pods=pods))
    ready = condition(status, "Ready")
    assert (ready["reason"], ready["message"]) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline (spec.execution.activeDeadlineSeconds)",
    )
    assert status["results"][0]["n"] == 3  # what was scored before the deadline is kept


def test_suspended_job_is_pending() -> None:
    status = status_of(observe(job=job(RUN, suspend=True), plan=plan(RUN)))
    assert status["phase"] == "Pending"
    assert condition(status, "Progressing")["reason"] == "Suspended"


def test_cancel_fails_the_run() -> None:
    status = status_of(observe(job=job(RUN, active=1), plan=plan(RUN), cancel=True))
    assert status["phase"] == "Failed"
    assert condition(status, "Ready")["reason"] == "Cancelled"


def test_invalid_spec_before_a_run_is_not_terminal() -> None:
    """Issue 7 item 1: a typo in a spec that never ran is fixable: fixing it starts the run."""
    invalid = status_of(observe(spec_problem="spec.thresholds[0]: 'exact_matc' names no scorer"))
    assert invalid["phase"] == "Failed"
    assert condition(invalid, "Ready")["reason"] == "InvalidSpec"
    assert condition(invalid, "Stalled")["status"] == "True"
    assert "startTime" not in invalid
    fixed = status_of(observe(generation=2), old=invalid)
    assert fixed["phase"] == "Pending"
    assert condition(fixed, "Ready")["reason"] == "Creating"
    assert condition(fixed, "Stalled")["status"] == "False"


def test_a_rejected_job_is_reported_and_not_terminal() -> None:
    rejected = status_of(observe(job_rejected='Job.batch "x" is invalid: spec.template...'))
    ready = condition(rejected, "Ready")
    assert (rejected["phase"], ready["reason"]) == ("Failed", "JobRejected")
    assert ready["message"].startswith("the apiserver rejected the run's Job: ")
    assert status_of(observe(generation=2), old=rejected)["phase"] == "Pending"


def test_a_job_deleted_mid_run_fails_the_run() -> None:
    """Issue 7 item 4: a Job deleted by hand is not silently created again."""
    running = status_of(observe(job=job(RUN, active=1), plan=plan(RUN), pods=[pod(RUN, 0)]))
    assert running["phase"] == "Running" and running["startTime"]
    gone = status_of(observe(), old=running)
    assert gone["phase"] == "Failed"
    ready = condition(gone, "Ready")
    assert ready["reason"] == "JobDeleted"
    assert f"Job {RUN} was deleted" in ready["message"] and "evals.io/rerun" in ready["message"]
    assert gone["completionTime"] == NOW


@pytest.mark.parametrize(
    ("waiting", "reason", "text"),
    [
        (("ImagePullBackOff", 'Back-off pulling image "x"'), "ImagePullBackOff", "Back-off"),
        (("ErrImagePull", "not found"), "ErrImagePull", "not found"),
        (
            ("CreateContainerConfigError", 'secret "model-key" not found'),
            "SecretNotFound",
            'secret "model-key" not found',
        ),
        (
            ("CreateContainerConfigError", "couldn't find key api-key in Secret default/model-key"),
            "SecretKeyNotFound",
            "couldn't find key api-key",
        ),
    ],
)
def test_a_stuck_pod_is_a_condition(waiting: tuple[str, str], reason: str, text: str) -> None:
    """Issue 7 item 7: a pod that cannot start says why, on the Evaluation."""
    pods = [pod(RUN, 0, phase="Pending", waiting=waiting)]
    views = [pod_view(p) for p in pods]
    status = status_of(
        observe(job=job(RUN, active=1), plan=plan(RUN), pods=pods, stuck=stuck(views))
    )
    ready = condition(status, "Ready")
    assert (status["phase"], ready["reason"]) == ("Pending", reason)
    assert ready["message"] == f"pod {RUN}-0-0: {waiting[1]}" and text in ready["message"]
    assert condition(status, "Progressing")["status"] == "False"


def test_an_unschedulable_pod_is_a_condition() -> None:
    body = pod(RUN, 0, phase="Pending", waiting=("ContainerCreating", ""))
    body["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
        }
    ]
    assert stuck([pod_view(body)]) == (
        "Unschedulable",
        f"pod {RUN}-0-0 cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
    )


def test_last_transition_time_is_kept_when_status_does_not_change() -> None:
    pods = [pod(RUN, 0)]
    running = {f"{RUN}-0-0": summary(0, 3, 10, state="running")}
    first = status_of(observe(job=job(RUN, active=1), plan=plan(RUN), pods=pods, live=running))
    second = status_of(
        observe(
            job=job(RUN, active=1), plan=plan(RUN), pods=pods, live=running,
            now="2026-11-23T11:00:00Z",
        ),
        old=first,
    )  # fmt: skip
    for type_ in ("Ready", "Progressing", "Passed"):
        assert condition(second, type_)["lastTransitionTime"] == NOW
    finished = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    third = status_of(
        observe(
            job=job(RUN, complete=True), plan=plan(RUN), pods=finished,
            now="2026-11-23T12:00:00Z",
        ),
        old=second,
    )  # fmt: skip
    assert condition(third, "Ready")["lastTransitionTime"] == "2026-11-23T12:00:00Z"
    assert condition(third, "Stalled")["lastTransitionTime"] == NOW  # False all along


def test_status_is_idempotent() -> None:
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    obs = observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods)
    first = status_of(obs)
    assert status_of(obs, old=first) == first


def test_finished_run_keeps_its_results_when_job_and_pods_are_gone() -> None:
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    done = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    later = status_of(observe(), old=done)
    assert later == done


def test_spec_change_after_finish_does_not_rerun_but_says_how() -> None:
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    done = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    status = status_of(observe(generation=2), old=done)
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == 2
    assert status["runGeneration"] == 1
    assert "evals.io/rerun" in condition(status, "Ready")["message"]
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_rerun_starts_a_clean_status() -> None:
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10))]
    done = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    rerun = Observation(run="quick-new999", rerun_token="1", generation=2, now=NOW)
    status = desired_status(done, rerun).status
    assert status["phase"] == "Pending"
    assert status["jobName"] == "quick-new999"
    assert status["rerunToken"] == "1"
    assert "results" not in status and "completionTime" not in status
    assert status["runGeneration"] == 2


def test_aggregate_of_shards_equals_single_shard() -> None:
    one = aggregate([summary(0, 17, 20)], ["exact_match", "numeric"])
    two = aggregate([summary(0, 9, 10), summary(1, 8, 10)], ["exact_match", "numeric"])
    assert one.results == two.results


def test_many_errored_samples_are_named_in_the_messages() -> None:
    done = summary(0, 80, 100, failed=10)
    done.errors = {"http_500": 6, "timeout": 3, "judge_unparsable": 1}
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    tolerant = plan(RUN)
    tolerant.max_errored_fraction = "0.2"
    status = status_of(
        observe(job=job(RUN, complete=True, run_plan=tolerant), plan=tolerant, pods=pods)
    )
    assert status["phase"] == "Succeeded"
    assert status["progress"]["failed"] == 10
    expected = "10 of 100 finished samples errored (10.0%, never scored): http_500=6, timeout=3"
    assert expected in condition(status, "Ready")["message"]
    assert expected in condition(status, "Progressing")["message"]
    running = summary(0, 40, 100, state="running")
    running.completed, running.failed, running.errors = 45, 5, {"http_429": 5}
    status = status_of(
        observe(
            job=job(RUN, active=1), plan=plan(RUN), pods=[pod(RUN, 0)],
            live={f"{RUN}-0-0": running},
        )
    )  # fmt: skip
    assert (
        "5 of 50 finished samples errored (10.0%, never scored): http_429=5"
        in (condition(status, "Progressing")["message"])
    )


def test_more_errored_samples_than_allowed_fail_the_run_and_never_pass() -> None:
    """Issue 8 item 3, in the cluster: above execution.maxErroredFraction (default 0.05)."""
    done = summary(0, 80, 100, failed=10)
    done.errors = {"http_500": 10}
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    ready = condition(status, "Ready")
    assert (status["phase"], ready["reason"]) == ("Failed", "TooManyErrors")
    assert ready["message"] == (
        "10 of 100 finished samples errored (10.0%, never scored), above "
        "execution.maxErroredFraction 0.05: http_500=10"
    )
    assert condition(status, "Passed")["status"] == "False"
    # Every sample errored (all 401s, say): never Succeeded, whatever the fraction allowed.
    nothing = summary(0, 0, 10, failed=10)
    nothing.errors = {"http_401": 10}
    pods = [pod(RUN, 0, phase="Succeeded", termination=nothing)]
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    assert condition(status, "Ready")["reason"] == "TooManyErrors"
    assert "no sample was scored" in condition(status, "Ready")["message"]


def test_truncated_answers_are_noted() -> None:
    done = summary(0, 9, 10)
    done.usage.truncated = 3
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    assert status["phase"] == "Succeeded"
    assert "3 of 10 answers (30.0%) were cut at maxTokens" in condition(status, "Ready")["message"]


def test_a_few_errored_samples_are_not_a_note() -> None:
    done = summary(0, 90, 100, failed=5)  # 5% is the documented fraction: not above it
    done.errors = {"http_500": 5}
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    assert condition(status, "Ready")["message"] == "the run finished"


def test_budget_exceeded_fails_the_run_and_keeps_the_results_so_far() -> None:
    stopped = summary(
        1, 4, 10, shards=2, state="error", reason="BudgetExceeded",
        message="stopped at the shard's share of the budget; spent $0.4 of $0.5",
    )  # fmt: skip
    pods = [
        pod(RUN, 0, phase="Succeeded", termination=summary(0, 9, 10, shards=2)),
        pod(RUN, 1, phase="Failed", exit_code=3, termination=stopped),
    ]
    status = status_of(
        observe(
            job=two_shards(failed=True, failed_indexes="1", completed_indexes="0"),
            plan=plan(RUN, shards=2),
            pods=pods,
        )
    )
    assert status["phase"] == "Failed"
    ready = condition(status, "Ready")
    assert (ready["reason"], ready["message"]) == (
        "BudgetExceeded",
        "shard 1: stopped at the shard's share of the budget; spent $0.4 of $0.5",
    )
    assert status["results"][0]["n"] == 14
    assert status["results"][0]["value"] == pytest.approx(13 / 14)
    assert status["progress"]["completed"] == 14


def test_judge_usage_is_reported_apart() -> None:
    done = summary(0, 9, 10)
    done.usage.judge = ShardUsage(requests=10, input_tokens=500, output_tokens=20, cost_usd="0.01")
    pods = [pod(RUN, 0, phase="Succeeded", termination=done)]
    status = status_of(observe(job=job(RUN, complete=True), plan=plan(RUN), pods=pods))
    assert status["usage"]["judge"] == {
        "requests": 10,
        "inputTokens": 500,
        "outputTokens": 20,
        "promptCacheTokens": 0,
        "timedOut": 0,
        "truncated": 0,
        "costUSD": "0.01",
    }


def test_the_termination_message_fits_with_many_error_classes_and_judge_usage() -> None:
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
