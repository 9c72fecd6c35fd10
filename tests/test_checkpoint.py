"""Checkpoint files: atomic writes, one clear error for every broken file, job state round trips."""

from __future__ import annotations

import os
import struct

import pytest

from ponder.engine import checkpoint as ck
from ponder.engine.checkpoint import (Cadence, JobState, PonderCheckpointError, RequestIds,
                                       TrackedStrategy, load_job, read_checkpoint, save_job,
                                       write_checkpoint)
from ponder.search.budget import BudgetManager
from ponder.search.messages import GenerateRequest
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedTask
from ponder.search.strategies import JobContext, get_strategy
from ponder.search.tree import Tree

TASK = ScriptedTask()
PROBLEM = ScriptedProblem("Q: ck\n", num_steps=3)


# -- the file ------------------------------------------------------------------------------

def test_write_then_read_returns_the_payload_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "job" / "checkpoint.ponder"
    write_checkpoint(path, b"payload one")
    write_checkpoint(path, b"payload two")
    assert read_checkpoint(path) == b"payload two"
    assert sorted(os.listdir(path.parent)) == ["checkpoint.ponder"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.ponder"
    write_checkpoint(path, b"good")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_checkpoint(path, b"new")
    monkeypatch.undo()
    assert read_checkpoint(path) == b"good"


def _corrupt(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    ("missing", "no such file"),
    ("empty", "not a ponder checkpoint"),
    ("magic", "not a ponder checkpoint"),
    ("version", "format version 99, but this ponder reads version 1"),
    ("truncated", "truncated: 10 of 20 payload bytes"),
    ("flipped", "corrupted: the payload does not match its checksum"),
])
def test_every_broken_file_gets_one_error_naming_it(tmp_path, damage, message):
    path = tmp_path / "checkpoint.ponder"
    write_checkpoint(path, b"x" * 20)
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "magic":
        _corrupt(path, 0)
    elif damage == "version":
        data = bytearray(path.read_bytes())
        struct.pack_into("<H", data, 8, 99)
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-10])
    else:
        _corrupt(path, len(path.read_bytes()) - 3)
    with pytest.raises(PonderCheckpointError, match=message) as info:
        read_checkpoint(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"checkpoint {path}: ")
    assert "\n" not in str(info.value)


def test_valid_header_with_garbage_payload_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "checkpoint.ponder"
    write_checkpoint(path, b"\x93\x01\x02")  # a msgpack list, not a job
    with pytest.raises(PonderCheckpointError, match="unreadable content"):
        load_job(path, TASK)


# -- records and cadence ------------------------------------------------------------------

def test_cadence_fires_on_time_or_on_updates():
    now = [0.0]
    by_time = Cadence(every_s=10, clock=lambda: now[0])
    assert not by_time.tick(100)
    now[0] = 10.0
    assert by_time.tick() and not by_time.tick()
    by_count = Cadence(every_s=0, every_updates=3, clock=lambda: now[0])
    assert [by_count.tick() for _ in range(6)] == [False, False, True, False, False, True]
    with pytest.raises(ValueError, match="every_s=-1"):
        Cadence(every_s=-1)


def test_request_ids_only_move_forward():
    ids = RequestIds(5)
    assert ids() == 5
    ids.advance_to(3)
    assert ids() == 6
    ids.advance_to(40)
    assert ids() == 40


# -- tracked strategies and job state -------------------------------------------------------

def _strategy(ids, name="best_of_n", **params):
    cls = get_strategy(name)
    return cls(Tree("p", PROBLEM.prompt), TASK, cls.Params.from_dict({"n": 4, **params}), 0, ids)


def test_tracked_strategy_replays_unanswered_requests_after_resume():
    ids = RequestIds()
    tracked = TrackedStrategy(_strategy(ids))
    requests = tracked.requests()
    assert [r.request_id for r in requests] == [0] and tracked.problem_id == "p"
    assert tracked.requests() == []  # waiting for its result
    tracked.resume()
    assert tracked.requests() == requests  # asked again, same id
    result = ScriptedGenerator([PROBLEM]).generate(requests)[0]
    tracked.on_result(requests[0], result)
    assert tracked.outstanding == {}
    tracked.stop("cancelled")
    assert tracked.done and tracked.inner.stop_reason == "cancelled"


def test_job_state_round_trips_and_drops_open_reservations(tmp_path):
    ids = RequestIds()
    budget = BudgetManager(flops_total=10**9, flops_per_problem=10**8)
    context = JobContext(budget=budget)
    strategies = [TrackedStrategy(_strategy(ids)) for _ in range(1)]
    for problem_id in ("p", "q"):
        budget.add_problem(problem_id)
    first = strategies[0].requests()[0]
    budget.settle(budget.reserve("p", 1000), 600)
    budget.reserve("p", 5000)  # in flight at the "crash"
    budget.settle(budget.reserve("q", 700), 700)
    state = JobState(["p", "q"], budget, ids, context, strategies,
                     finished={"q": {"id": "q", "flops": 700, "flops_by_model": {"generator": 700}}},
                     stats={"p": {"flops": 600}}, meta={"strategy": "best_of_n"})
    path = tmp_path / "checkpoint.ponder"
    assert save_job(path, state, TASK) == path.stat().st_size

    restored = load_job(path, TASK)
    assert restored.budget.spent("p") == 600 and restored.budget.reserved("p") == 0
    assert restored.budget.job_spent == 1300 and restored.budget.job_reserved == 0
    assert restored.budget.cap("p") == 10**8 and restored.budget.flops_total == 10**9
    assert restored.request_ids.next_id == ids.next_id
    assert list(restored.finished) == ["q"] and restored.stats == {"p": {"flops": 600}}
    assert restored.meta == {"strategy": "best_of_n"}
    (strategy,) = restored.strategies
    assert strategy.inner.next_request_id is restored.request_ids
    assert strategy.task is TASK
    assert strategy.requests() == [first]  # the request in flight is asked again


def test_problems_finished_after_the_checkpoint_are_not_redone(tmp_path):
    ids = RequestIds()
    budget = BudgetManager(flops_total=10**9)
    budget.add_problem("p")
    budget.settle(budget.reserve("p", 1000), 400)
    tracked = TrackedStrategy(_strategy(ids))
    tracked.requests()
    path = tmp_path / "checkpoint.ponder"
    save_job(path, JobState(["p"], budget, ids, JobContext(budget=budget), [tracked]), TASK)
    # "p" finished after the checkpoint; its results line has its final FLOPs.
    line = {"id": "p", "flops": 900, "flops_by_model": {"generator": 800, "verifier": 100}}
    restored = load_job(path, TASK, finished={"p": line})
    assert restored.strategies == [] and "p" in restored.finished
    assert restored.budget.spent("p") == 900 and restored.budget.job_spent == 900
    assert restored.budget.spent_by_model("p") == {"generator": 800, "verifier": 100}


def test_add_stats_sums_counters():
    assert ck.add_stats({"flops": 3, "a": 1}, {"flops": 4, "b": 2}) == {"flops": 7, "a": 1, "b": 2}
    assert ck.add_stats(None, {"flops": 4}) == {"flops": 4}


def test_replayed_request_keeps_its_original_size():
    ids = RequestIds()
    tracked = TrackedStrategy(_strategy(ids, n=8))
    (request,) = tracked.requests()
    assert isinstance(request, GenerateRequest) and request.n == 8
    tracked.resume()
    assert tracked.requests()[0].n == 8


# -- through ponder solve ---------------------------------------------------------------------

SCRIPTED_SOLVE = ["--set", "ray.mode=inprocess", "--set", "generator.backend=scripted",
                  "--set", "generator.kwargs.instant_steps=4", "--set", "verifier.backend=scripted",
                  "--set", "verifier.kwargs.instant=true", "--no-progress"]


@pytest.mark.parametrize("damage, message", [
    ("flip", "corrupted: the payload does not match its checksum"),
    ("truncate", "truncated"),
    ("version", "format version 7, but this ponder reads version 1"),
])
def test_ponder_solve_resume_names_a_broken_checkpoint_in_one_line(tmp_path, capsys, damage, message):
    from ponder.cli import EXIT_USAGE, main

    out = tmp_path / "run"
    assert main(["solve", "--range", "0:2", "--out", str(out), *SCRIPTED_SOLVE]) == 0
    path = out / "checkpoint.ponder"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-1] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        struct.pack_into("<H", data, 8, 7)
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["solve", "--range", "0:2", "--out", str(out), "--resume", *SCRIPTED_SOLVE]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ponder solve: error: checkpoint {path}: ")
    assert message in err[0]
