"""The persistent engine: many jobs on one set of pools, status with best answers so far,
results, cancel, and a restarted service resuming unfinished jobs. In-process pools here;
the Ray actor and the CLI at the end (marked ``ray``)."""

from __future__ import annotations

import time

import pytest
from conftest import inprocess_config, scripted_job

from ponder.engine.inprocess import InProcessPool, InProcessPools
from ponder.engine.service import EngineService, JobNotFound

RAY_NAMESPACE = "ponder"  # the conftest ray_runtime joins it: where ponder serve's actor lives


def service(tmp_path, num_problems=6, autostart=True, **kwargs):
    task, problems, gen, ver = scripted_job(num_problems=num_problems)
    config = inprocess_config("beam", {"beam_width": 2, "expansion_factor": 2})
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


def test_a_restarted_service_redoes_no_finished_problem_and_counts_no_flop_twice(tmp_path):
    from ponder.engine.rundir import read_results

    svc, problems = service(tmp_path, autostart=False, checkpoint_every_s=0)
    job_id = svc.submit(problems, flops_per_problem=3_000_000, flops_total=15_000_000)
    runner = svc.runners[job_id]
    while runner.num_finished < 2:
        svc._step()
    assert runner.has_work
    runner.checkpoint()
    before = {r["id"]: r for r in read_results(tmp_path / "jobs" / job_id)}
    svc.pools.shutdown()  # the crash
    again, _ = service(tmp_path, autostart=False)
    try:
        again.start()
        result = wait_done(again, job_id)
    finally:
        again.stop()
    records = {r["id"]: r for r in result["results"]}
    assert sorted(records) == sorted(p.problem_id for p in problems)
    assert all(records[pid] == record for pid, record in before.items())  # not redone
    assert result["summary"]["total_flops"] == sum(r["flops"] for r in records.values())
    assert result["summary"]["total_flops"] <= 15_000_000
    assert all(r["flops"] <= r["budget_flops"] <= 3_000_000 for r in records.values())
    trees = (tmp_path / "jobs" / job_id / "trees.jsonl").read_text().splitlines()
    assert len(trees) == len(problems)  # each tree recorded once, across the restart


def test_a_job_keeps_its_search_and_caps_when_the_engine_restarts_with_another_config(tmp_path):
    svc, problems = service(tmp_path, autostart=False, checkpoint_every_s=0)
    job_id = svc.submit(problems[:3])  # the config's defaults: beam, no caps
    svc._step()
    svc.pools.shutdown()  # the crash, before any checkpoint
    task, _, gen, ver = scripted_job(num_problems=6)
    other = inprocess_config("mcts", {"num_simulations": 8}, flops_per_problem=1_000)
    pools = InProcessPools(InProcessPool(gen, "generator"), InProcessPool(ver, "verifier"))
    again = EngineService(other, tmp_path, pools, task=task)
    try:
        result = wait_done(again, job_id)
    finally:
        again.stop()
    assert result["state"] == "done" and result["summary"]["strategy"] == "beam"
    assert result["summary"]["budget"]["flops_per_problem"] is None
    assert all(r["answer"] is not None for r in result["results"])


def test_a_broken_checkpoint_fails_its_job_alone_naming_the_file(tmp_path):
    svc, problems = service(tmp_path, autostart=False, checkpoint_every_s=0)
    broken, fine = svc.submit(problems[:3]), svc.submit(problems[3:])
    for _ in range(3):
        svc._step()
    for runner in svc.runners.values():
        runner.checkpoint()
    svc.pools.shutdown()
    path = tmp_path / "jobs" / broken / "checkpoint.ponder"
    path.write_bytes(path.read_bytes()[:-5])  # truncated
    stray = tmp_path / "jobs" / "stray"
    stray.mkdir()
    (stray / "job.json").write_text('{"job_id": "stray", "sta')  # a torn job file
    again, _ = service(tmp_path, autostart=False)
    try:
        status = again.status(broken)
        assert status["state"] == "failed"
        assert status["error"].startswith(f"cannot resume: checkpoint {path}: truncated")
        assert f"{stray / 'job.json'}: not a job file" in again.last_error
        again.start()
        assert wait_done(again, fine)["state"] == "done"
    finally:
        again.stop()


# -- the detached Ray actor and its client ------------------------------------------------

def actor_config():
    from ponder.config import load_config

    task, problems, gen, _ = scripted_job(num_problems=4)
    role = {"backend": "scripted", "num_cpus": 0.25, "kwargs": {"problems": gen.problems, "seed": 1}}
    config = load_config(data={
        "task": {"name": "conftest:ScriptedQATask"},
        "search": {"strategy": "beam", "params": {"beam_width": 2, "expansion_factor": 2}},
        "generator": role, "verifier": role, "budget": {"flops_per_problem": 5_000_000},
        "output": {"progress": "off"}})
    return config, problems


@pytest.mark.ray
def test_detached_actor_serves_clients_and_resumes_after_its_process_dies(ray_runtime, tmp_path):
    import os
    import signal

    import ray

    from ponder.cluster.client import PonderClient
    from ponder.cluster.server import start_actor
    from ponder.engine.service import ACTOR_NAME, NAMESPACE

    config, problems = actor_config()
    handle = start_actor(config, tmp_path, checkpoint_every_s=0.2)
    try:
        client = PonderClient()
        assert client.ping()["task"] == "scripted_qa"
        first = client.submit(problems, strategy="best_of_n", params={"n": 3, "max_solution_tokens": 64})
        done = client.result(first, wait=True, timeout=120, poll_s=0.1)
        assert done["state"] == "done" and len(done["results"]) == 4
        assert all(0 < r["flops"] <= 5_000_000 for r in done["results"])

        second = client.submit(problems, strategy="mcts", params={"num_simulations": 24})
        while client.status(second)["num_finished"] == 0 and (tmp_path / "jobs" / second /
                                                              "checkpoint.ponder").exists() is False:
            time.sleep(0.05)
        pid = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGKILL)  # the engine's process dies; Ray restarts the actor
        client = PonderClient()
        finished = client.result(second, wait=True, timeout=180, poll_s=0.2)
        assert finished["state"] == "done"
        assert sorted(r["id"] for r in finished["results"]) == sorted(p.problem_id for p in problems)
        assert all(r["flops"] <= 5_000_000 for r in finished["results"])
        with pytest.raises(Exception, match="no job 'nope'"):
            client.status("nope")
        assert {j["job_id"] for j in client.status()["jobs"]} == {first, second}
    finally:
        ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE), no_restart=True)


# -- token authentication of the engine's Ray --------------------------------------------

def _gcs(runtime) -> str:
    return "127.0.0.1:" + runtime.address.rpartition(":")[2]


@pytest.mark.ray
def test_a_wrong_token_is_refused_at_once_with_a_clear_error(ray_runtime):
    from ponder.cluster.auth import TokenRefused, check_client, probe

    gcs = _gcs(ray_runtime)
    assert probe(gcs) == "ok"  # this process's own token
    assert probe(gcs, token="") == "refused" and probe(gcs, token="0" * 32) == "refused"
    start = time.monotonic()
    with pytest.raises(TokenRefused, match=r"Ray at 127\.0\.0\.1:\d+ \(from s\.json\) requires its "
                                           r"auth token and this client presented a wrong token; "
                                           r"Ray reads the token from RAY_AUTH_TOKEN"):
        check_client(gcs, token="0" * 32, source="s.json")
    assert time.monotonic() - start < 10  # not Ray's 20 s connection timeout
    check_client(gcs)  # the right token passes
    with pytest.raises(ConnectionError, match="no Ray answers at 127.0.0.1:1"):
        check_client("127.0.0.1:1")


def start_ray_without_auth(tmp_path):
    """A local Ray with token authentication off, in its own process; (process, GCS address)."""
    import os
    import subprocess
    import sys
    import tempfile

    temp = tempfile.mkdtemp(prefix="ponder-na-", dir="/tmp")
    code = ("import ray, sys\n"
            f"ray.init(num_cpus=1, include_dashboard=False, _temp_dir={temp!r}, logging_level='ERROR')\n"
            "print(ray.get_runtime_context().gcs_address, flush=True)\n"
            "sys.stdin.read()\n"
            "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip(), temp


@pytest.mark.ray
def test_serve_joins_a_cluster_elsewhere_only_with_token_auth(ray_runtime, tmp_path):
    import shutil

    from ponder.cluster.auth import require_token_auth
    from ponder.cluster.server import serve

    config, _ = actor_config()
    with pytest.raises(ValueError, match="Ray Client address"):
        serve(config, tmp_path / "a", address="ray://10.0.0.5:10001")
    require_token_auth(_gcs(ray_runtime))  # a cluster with token auth: fine
    proc, address, temp = start_ray_without_auth(tmp_path)
    try:
        assert address, "the Ray without auth did not start"
        with pytest.raises(ValueError, match=f"the Ray cluster at {address} accepts clients "
                                             f"without its token.*RAY_AUTH_MODE=token"):
            serve(config, tmp_path / "b", address=address)
    finally:
        proc.communicate("", timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
    assert not (tmp_path / "b" / "serve.json").exists()


class ScriptedVoteOnly:
    """A test strategy that samples whole solutions and votes, never asking the verifier."""

    @staticmethod
    def register():
        from ponder.search.messages import GenerateRequest
        from ponder.search.strategies import Strategy, StrategyParams, register
        from ponder.search.strategies.common import add_solution, answer_from

        @register
        class VoteOnly(Strategy):
            name = "scripted_vote_only"
            Params = StrategyParams

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.sent, self.leaves = False, []

            def requests(self):
                if self.sent or self.done:
                    return []
                self.sent = True
                return [GenerateRequest(self.next_request_id(), self.tree.prompt, n=3,
                                        max_new_tokens=64, stop=(), seed=self.seed_for(),
                                        prefix_id=self.tree.prefix_id(0))]

            def on_result(self, request, result):
                self.leaves = [add_solution(self.tree, self.task, 0, t) for t in result.texts]
                self.stop("done")

            def answer(self):
                return answer_from(self, [n for n in self.leaves if n is not None], "majority", "last")


def test_a_job_that_cannot_run_fails_alone(tmp_path):
    ScriptedVoteOnly.register()
    task, problems, gen, _ = scripted_job(num_problems=3)
    config = inprocess_config("scripted_vote_only", {})
    pools = InProcessPools(InProcessPool(gen, "generator"), None)  # no verifier
    svc = EngineService(config, tmp_path, pools, task=task)
    try:
        needs_verifier = svc.submit(problems, strategy="beam", params={"beam_width": 2})
        fine = svc.submit(problems)
        failed, done = wait_done(svc, needs_verifier), wait_done(svc, fine)
    finally:
        svc.stop()
    assert failed["state"] == "failed" and "no verifier" in failed["error"]
    assert done["state"] == "done" and len(done["results"]) == 3


def _cli_has_serve() -> bool:
    from ponder.cli import build_parser

    try:
        build_parser(["serve"]).parse_args(["serve"])
    except SystemExit:
        return False
    return True


SCRIPTED_SERVE = ["--set", "generator.backend=scripted", "--set", "generator.kwargs.instant_steps=4",
                  "--set", "verifier.backend=scripted", "--set", "verifier.kwargs.instant=true",
                  "--set", "generator.num_cpus=0.25", "--set", "verifier.num_cpus=0.25",
                  "--set", "search.params.beam_width=2", "--set", "search.params.expansion_factor=2"]


def listening_addresses(pid: int) -> set[str]:
    """The IPs on which the process ``pid`` and its descendants (its Ray) listen for TCP."""
    import ray  # noqa: F401 -- puts Ray's vendored psutil on the path
    import psutil

    root = psutil.Process(pid)
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            found |= {c.laddr.ip for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
    assert found, "the server's Ray listens nowhere?"
    return found


@pytest.mark.ray
@pytest.mark.skipif(not _cli_has_serve(), reason="the CLI has no serve command yet")
def test_ponder_serve_submit_status_result_cancel_from_the_command_line(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cli = [sys.executable, "-m", "ponder.cli"]
    server = subprocess.Popen([*cli, "serve", "--state-dir", str(state), "--num-cpus", "2",
                               "--checkpoint-every-s", "1", *SCRIPTED_SERVE],
                              cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)

    def ponder(*args: str) -> str:
        done = subprocess.run([*cli, *args, "--state-dir", str(state)], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    try:
        deadline = time.monotonic() + 180
        while not (state / "serve.json").exists():
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "ponder serve did not come up"
            time.sleep(0.2)
        served = json.loads((state / "serve.json").read_text())
        assert served["address"].startswith("127.0.0.1:") and served["auth_mode"] == "token"
        assert listening_addresses(server.pid) <= {"127.0.0.1", "::ffff:127.0.0.1"}  # loopback only
        from ponder.tasks.game24 import default_csv_path

        csv = str(default_csv_path())
        job = ponder("submit", csv, "--range", "0:3", "--budget", "1e12").strip()
        assert job in ponder("status")
        result = json.loads(ponder("result", job, "--wait", "--json"))
        assert result["state"] == "done" and len(result["results"]) == 3
        assert all(r["answer"] is not None for r in result["results"])
        # Long enough that it cannot finish before the cancel arrives (~1e6 expansions).
        other = ponder("submit", csv, "--range", "3:53", "--strategy", "mcts", "--budget", "1e18",
                       "--param", "num_simulations=20000").strip()
        assert job != other
        assert "cancelled" in ponder("cancel", other)
        assert json.loads(ponder("status", other, "--json"))["state"] == "cancelled"
        text = ponder("status", job)
        assert text.startswith(f"job {job}: done, 3/3 finished")
        # Clients must send Ray's token; a wrong or missing one is one clear line, at once.
        no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH_TOKEN")}
        home = tmp_path / "home"  # no ~/.ray/auth_token there
        home.mkdir()
        for bad_env, why in (({**no_token, "RAY_AUTH_TOKEN": "0" * 32}, "presented a wrong token"),
                             ({**no_token, "HOME": str(home)}, "has no token to give it")):
            start = time.monotonic()
            refused = subprocess.run([*cli, "status", job, "--state-dir", str(state)], cwd=repo,
                                     env=bad_env, capture_output=True, text=True, timeout=120)
            assert refused.returncode == 2, refused.stderr[-2000:]
            assert refused.stderr.startswith("ponder status: error: the engine's Ray at 127.0.0.1:")
            assert f"requires its auth token and this client {why}" in refused.stderr
            assert refused.stderr.count("\n") == 1 and time.monotonic() - start < 20
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0
    assert not (state / "serve.json").exists()


@pytest.mark.parametrize("command", ["serve", "submit", "status", "result", "cancel",
                                     "export-traces", "train-verifier"])
def test_every_long_horizon_command_documents_its_options(command):
    from ponder.cli import build_parser

    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert sub.description, f"ponder {command} --help has no description"
    undocumented = [a.option_strings or a.dest for a in sub._actions
                    if not a.help and a.dest != "help"]
    assert not undocumented, f"ponder {command} --help leaves undocumented: {undocumented}"

