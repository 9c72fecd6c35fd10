"""The persistent engine: many jobs on one set of pools, status with best answers so far,
results, cancel, and a restarted service resuming unfinished jobs. In-process pools here;
the Ray actor and the CLI at the end (marked ``ray``)."""

from __future__ import annotations

import time

import pytest

from ponder.cluster.inprocess import InProcessPool, InProcessPools
from ponder.cluster.serve import EngineService, JobNotFound

import test_engine


def service(tmp_path, num_problems=6, autostart=True, **kwargs):
    task, problems, gen, ver = test_engine.scripted_job(num_problems=num_problems)
    config = test_engine.inprocess_config("beam", {"beam_width": 2, "expansion_factor": 2})
    pools = InProcessPools(InProcessPool(gen, "generator"), InProcessPool(ver, "verifier"))
    return EngineService(config, tmp_path, pools, task=task, autostart=autostart, **kwargs), problems


def wait_done(svc, job_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = svc.result(job_id)
        if result is not None:
            return result
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {svc.status(job_id)}")


def test_two_jobs_share_the_pools_and_both_finish_under_their_own_caps(tmp_path):
    svc, problems = service(tmp_path)
    try:
        a = svc.submit(problems[:3])
        b = svc.submit([{"id": p.problem_id, "problem": p.problem, "reference": p.reference}
                        for p in problems[3:]], flops_per_problem=1_000_000, strategy="best_of_n",
                       params={"n": 4, "max_solution_tokens": 64})
        ra, rb = wait_done(svc, a), wait_done(svc, b)
    finally:
        svc.stop()
    assert ra["state"] == rb["state"] == "done"
    assert sorted(r["id"] for r in ra["results"]) == ["0", "1", "2"]
    assert sorted(r["id"] for r in rb["results"]) == ["3", "4", "5"]
    assert all(0 < r["flops"] <= 1_000_000 for r in rb["results"])
    assert rb["summary"]["strategy"] == "best_of_n" and ra["summary"]["strategy"] == "beam"
    assert ra["summary"]["total_flops"] == sum(r["flops"] for r in ra["results"])
    assert all(r["answer"] is not None for r in ra["results"] + rb["results"])
    listing = svc.status()["jobs"]
    assert {j["job_id"]: j["state"] for j in listing} == {a: "done", b: "done"}


def test_status_reports_progress_and_best_answers_while_running(tmp_path):
    svc, problems = service(tmp_path, autostart=False)
    job_id = svc.submit(problems)
    for _ in range(6):  # a few loop steps by hand, so the job is mid-search
        svc._step()
    status = svc.status(job_id)
    assert status["state"] == "running" and status["num_problems"] == 6
    assert status["flops_spent"] > 0 and set(status["best"]) == {p.problem_id for p in problems}
    assert {b["stop_reason"] for b in status["best"].values()} <= {"running", "done", "no_answer",
                                                                   "budget"}
    assert svc.result(job_id) is None
    svc.stop()


def test_cancel_frees_reservations_and_keeps_finished_results(tmp_path):
    svc, problems = service(tmp_path, autostart=False)
    job_id = svc.submit(problems)
    for _ in range(3):
        svc._step()
    runner = svc.runners[job_id]
    assert runner.budget.job_reserved > 0
    assert svc.cancel(job_id) and not svc.cancel(job_id)
    assert runner.budget.job_reserved == 0
    result = svc.result(job_id)
    assert result["state"] == "cancelled"
    assert {r["stop_reason"] for r in result["results"]} <= {"cancelled", "done", "no_answer"}
    assert len(result["results"]) == len(problems)
    svc.stop()


def test_unknown_job_and_bad_submissions_are_clear_errors(tmp_path):
    svc, problems = service(tmp_path, autostart=False)
    with pytest.raises(JobNotFound, match="no job 'nope'; known jobs: none"):
        svc.status("nope")
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        svc.submit(problems, strategy="nope")
    with pytest.raises(ValueError, match="at least one problem"):
        svc.submit([])
    assert svc.jobs == {}  # nothing half-made was saved
    svc.stop()


def test_a_restarted_service_resumes_unfinished_jobs(tmp_path):
    svc, problems = service(tmp_path, autostart=False, checkpoint_every_s=0)
    job_id = svc.submit(problems)
    for _ in range(5):
        svc._step()
    svc.runners[job_id].checkpoint()
    spent = svc.runners[job_id].budget.job_spent
    svc.pools.shutdown()  # the crash: no stop(), no final checkpoint
    again, _ = service(tmp_path, autostart=False)
    try:
        assert again.runners[job_id].budget.job_spent == spent
        again.start()
        result = wait_done(again, job_id)
    finally:
        again.stop()
    assert result["state"] == "done"
    assert sorted(r["id"] for r in result["results"]) == sorted(p.problem_id for p in problems)
