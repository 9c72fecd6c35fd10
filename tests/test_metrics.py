"""Engine metrics: the delta logic against a recording sink, then Ray's Prometheus endpoint.

Without Ray: ``DeltaMetrics`` reports counters as increments that add up to the job's
own totals, gauges as they stand, nothing before its interval, nothing of a resumed
job's earlier work, and a failing sink never stops a job. With Ray (marked ``ray``):
a local Ray with a metrics export port runs a job on slowed scripted replicas while
the test scrapes ``http://127.0.0.1:<port>/metrics`` and finds ponder's metrics there
and moving. ``DelayedScriptedGenerator`` is loaded by the actors as
``test_metrics:DelayedScriptedGenerator`` through the tests' PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TESTS_RUNTIME_ENV, inprocess_config, scripted_job

from ponder.config import ConfigError, load_config
from ponder.engine.engine import Engine, run_inprocess
from ponder.engine.inprocess import InProcessPool, InProcessPools
from ponder.engine.metrics import METRICS, NO_METRICS, DeltaMetrics
from ponder.engine.service import EngineService
from ponder.search.budget import BudgetManager
from ponder.search.scheduler import ProblemStats
from ponder.search.scripted import ScriptedGenerator

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "configs" / "grafana_ponder_dashboard.json"


class RecordingSink:
    """A MetricsSink that keeps every call; checks names, kinds and tag keys against METRICS."""

    def __init__(self):
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []  # (kind, name, value, tags)

    def _record(self, kind: str, name: str, value: float, tags: dict[str, str]) -> None:
        spec = METRICS[name]
        assert spec.kind == kind and tuple(sorted(tags)) == tuple(sorted(spec.tag_keys)), (name, tags)
        self.calls.append((kind, name, value, tags))

    def count(self, name, value, tags):
        assert value > 0, (name, value)  # Ray's Counter.inc refuses anything else
        self._record("counter", name, value, tags)

    def gauge(self, name, value, tags):
        self._record("gauge", name, value, tags)

    def total(self, name: str, **tags: str) -> float:
        return sum(v for k, n, v, t in self.calls
                   if k == "counter" and n == name and tags.items() <= t.items())

    def last(self, name: str, **tags: str) -> float | None:
        values = [v for k, n, v, t in self.calls
                  if k == "gauge" and n == name and tags.items() <= t.items()]
        return values[-1] if values else None


# -- without Ray -------------------------------------------------------------------------

def test_counters_add_up_to_the_jobs_totals_and_gauges_hold_the_caps(tmp_path):
    task, problems, gen, ver = scripted_job(num_problems=5)
    sink = RecordingSink()
    config = inprocess_config("beam", {"beam_width": 2, "expansion_factor": 2},
                              flops_per_problem=4_000_000, flops_total=15_000_000)
    metrics = DeltaMetrics(sink, interval_s=1e-9)  # a report every loop step
    summary = run_inprocess(config, problems, tmp_path / "job-a", gen, ver, task=task,
                            metrics=metrics)
    job = {"job_id": "job-a"}
    assert sink.total("ponder_problems_finished", **job) == 5
    assert sink.total("ponder_problems_solved", **job) == summary["num_solved"]
    assert sink.total("ponder_flops", **job) == summary["total_flops"]
    for role in ("generator", "verifier"):
        assert sink.total("ponder_flops", role=role, **job) == summary["flops_by_model"][role] > 0
        assert sink.total("ponder_requests", role=role, **job) > 0
    assert sink.total("ponder_generated_tokens", **job) == summary["tokens"]["generator"]["generated"]
    assert sink.total("ponder_scored_tokens", **job) == summary["tokens"]["verifier"]["prompt"] > 0
    # beam asks expansion_factor samples per live beam: more samples than generate requests
    assert sink.total("ponder_expansions", **job) > sink.total("ponder_requests", role="generator")
    assert sink.last("ponder_job_flops_spent", **job) == summary["total_flops"] <= 15_000_000
    assert sink.last("ponder_job_flops_cap", **job) == 15_000_000
    assert sink.last("ponder_problem_flops_cap", **job) == 4_000_000
    assert sink.last("ponder_job_flops_reserved", **job) == 0
    assert sink.last("ponder_problems_active", **job) == 0
    # the pools' gauges, tagged with the job that owns them
    seen = [v for k, n, v, t in sink.calls if n == "ponder_requests_in_flight"
            and t == {"engine": "job-a", "role": "generator"}]
    assert max(seen) > 0 and seen[-1] == 0
    assert sink.last("ponder_requests_queued", role="verifier") == 0


class FakeRunner:
    """What DeltaMetrics reads of a JobRunner, with numbers a test moves by hand."""

    def __init__(self, out_dir: Path, num_finished: int = 0, num_solved: int = 0):
        self.budget = BudgetManager(flops_total=1000, flops_per_problem=None)
        self.budget.add_problem("p")
        self.scheduler = SimpleNamespace(totals=ProblemStats())
        self.num_finished, self.totals = num_finished, SimpleNamespace(num_solved=num_solved)
        self.active, self.out_dir = {"p": None}, out_dir


def test_a_report_sends_what_grew_since_the_last_one_and_nothing_of_a_resumed_past(tmp_path):
    sink = RecordingSink()
    metrics = DeltaMetrics(sink, interval_s=3600.0, engine="serve")
    runner = FakeRunner(tmp_path / "job-r", num_finished=3, num_solved=2)  # resumed: 3 done before
    runner.scheduler.totals.num_samples = 7  # counted before job_started: not reported
    metrics.job_started(runner)
    pools = InProcessPools(InProcessPool(ScriptedGenerator(), "generator"))

    runner.scheduler.totals.num_samples += 4
    runner.num_finished, runner.totals.num_solved = 5, 3
    runner.budget.settle(runner.budget.reserve("p", 100, "verifier"), 60)
    reservation = runner.budget.reserve("p", 200, "generator")
    metrics.tick([runner], pools)  # the first tick reports at once
    assert sink.total("ponder_expansions") == 4
    assert sink.total("ponder_problems_finished") == 2 and sink.total("ponder_problems_solved") == 1
    assert sink.total("ponder_flops", role="verifier") == 60
    assert sink.total("ponder_flops", role="generator") == 0  # a reservation is not spent
    assert sink.last("ponder_job_flops_reserved") == 200 and sink.last("ponder_job_flops_spent") == 60
    assert sink.last("ponder_problem_flops_cap") is None  # uncapped: no gauge
    assert sink.last("ponder_requests_in_flight", engine="serve", role="generator") == 0

    before = len(sink.calls)
    runner.scheduler.totals.num_samples += 2
    metrics.tick([runner], pools)  # within the interval: not a report
    assert len(sink.calls) == before

    runner.budget.settle(reservation, 150)
    metrics.job_ended(runner, pools)  # always reports, then forgets the runner
    assert sink.total("ponder_expansions") == 6
    assert sink.total("ponder_flops", role="generator") == 150
    assert sink.last("ponder_job_flops_reserved") == 0
    assert runner not in metrics._last
    counters = [c for c in sink.calls[before:] if c[0] == "counter"]
    assert {c[1] for c in counters} == {"ponder_expansions", "ponder_flops"}  # zero deltas: no call


def test_the_persistent_engine_reports_each_job_under_its_own_id(tmp_path):
    task, problems, gen, ver = scripted_job(num_problems=5)
    pools = InProcessPools(InProcessPool(gen, "generator"), InProcessPool(ver, "verifier"))
    sink = RecordingSink()
    svc = EngineService(inprocess_config("beam", {"beam_width": 2, "expansion_factor": 2}),
                        tmp_path, pools, task=task, metrics=DeltaMetrics(sink, 0.01, engine="serve"))
    try:
        a, b = svc.submit(problems[:2]), svc.submit(problems[2:], strategy="best_of_n", params={"n": 4})
        deadline = time.monotonic() + 60
        while svc.status(a)["state"] == "running" or svc.status(b)["state"] == "running":
            assert time.monotonic() < deadline, svc.status()
            time.sleep(0.05)
    finally:
        svc.stop()
    for job_id, num in ((a, 2), (b, 3)):
        summary = svc.result(job_id)["summary"]
        assert sink.total("ponder_problems_finished", job_id=job_id) == num
        assert sink.total("ponder_flops", job_id=job_id) == summary["total_flops"] > 0
    assert sink.last("ponder_requests_in_flight", engine="serve", role="generator") == 0


def test_a_failing_sink_warns_once_and_the_job_goes_on(tmp_path):
    class Broken(RecordingSink):
        def gauge(self, name, value, tags):
            raise ConnectionError("metrics agent gone")

    task, problems, gen, ver = scripted_job(num_problems=3)
    metrics = DeltaMetrics(Broken(), interval_s=1e-9)
    with pytest.warns(RuntimeWarning, match="metrics agent gone") as caught:
        summary = run_inprocess(inprocess_config("best_of_n", {"n": 4}), problems, tmp_path, gen,
                                ver, task=task, metrics=metrics)
    assert summary["num_problems"] == 3
    assert len([w for w in caught if "ponder metrics" in str(w.message)]) == 1
    assert metrics.last_error.startswith("ConnectionError")


def test_metrics_off_and_in_process_jobs_report_nothing_and_the_config_is_checked():
    task = scripted_job()[0]
    config = inprocess_config()
    assert config.engine.metrics_interval_s == 1.0
    assert Engine(config, task, pools=object()).metrics() is NO_METRICS  # ray.mode: inprocess
    config.ray.mode = "ray"
    config.engine.metrics_interval_s = 0
    assert Engine(config, task, pools=object()).metrics() is NO_METRICS
    with pytest.raises(ConfigError, match="engine.metrics_interval_s"):
        load_config(data={"engine": {"metrics_interval_s": -1}})
    with pytest.raises(ConfigError, match="ray.metrics_export_port"):
        load_config(data={"ray": {"metrics_export_port": 70000}})


def test_a_metrics_port_is_for_a_local_ray_only():
    from ponder.cluster.runtime import connect  # imports Ray; starts none here

    with pytest.raises(ValueError, match="metrics_export_port apply to a local Ray only"):
        connect(address="127.0.0.1:1", metrics_export_port=8080)


def exported_names() -> set[str]:
    """Every series name the metrics catalogue puts on Ray's endpoint."""
    return {f"ray_{name}_total" if spec.kind == "counter" else f"ray_{name}"
            for name, spec in METRICS.items()}


def test_the_dashboard_shows_every_metric_and_only_ours():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = set(re.findall(r"\bray_ponder_\w+", exprs))
    assert used == exported_names()
    assert all("${datasource}" in json.dumps(p["datasource"]) for p in dashboard["panels"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for name in re.findall(r"ray_ponder_\w+_total", exprs):  # counters are read as rates
        assert re.search(rf"(rate|increase)\({name}\{{", exprs), name


# -- on Ray: the Prometheus endpoint --------------------------------------------------------

REPORT_INTERVAL_ENV = "RAY_metrics_report_interval_ms"  # how often Ray's agent exports


class DelayedScriptedGenerator(ScriptedGenerator):
    """A ScriptedGenerator that takes ``delay_s`` per call, so a job lasts a few exports."""

    def __init__(self, delay_s: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def generate(self, requests):
        time.sleep(self.delay_s)
        return super().generate(requests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_ray():
    """A local Ray for this module whose metrics agent serves 127.0.0.1:<port>, exporting every second."""
    from ponder.cluster.runtime import connect  # Ray: only the tests that use this fixture

    port = free_port()
    old = os.environ.get(REPORT_INTERVAL_ENV)
    os.environ[REPORT_INTERVAL_ENV] = "1000"  # read by the Ray processes connect starts
    try:
        runtime = connect(num_cpus=2, log_to_driver=False, runtime_env=TESTS_RUNTIME_ENV,
                          metrics_export_port=port)
    finally:
        if old is None:
            os.environ.pop(REPORT_INTERVAL_ENV)
        else:
            os.environ[REPORT_INTERVAL_ENV] = old
    yield port
    runtime.shutdown()


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """The endpoint's samples as ``(name, labels, value)``; [] while it does not answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    try:
        text = opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return []
    samples = []
    for line in text.splitlines():
        match = re.match(r"(ray_ponder_\w+)\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    """The sum over every series of ``name`` with ``labels`` (Ray adds WorkerId and others)."""
    found = [v for n, l, v in samples if n == name and labels.items() <= l.items()]
    return sum(found) if found else None


@pytest.mark.ray
def test_job_metrics_appear_on_rays_prometheus_endpoint_and_move(metrics_ray, tmp_path):
    from ponder.cluster.pools import build_ray_pools

    port = metrics_ray
    task, problems, gen, _ = scripted_job(num_problems=6)
    role = {"num_cpus": 0.5, "kwargs": {"problems": gen.problems, "seed": 1}}
    config = load_config(data={
        "search": {"strategy": "beam", "params": {"beam_width": 2, "expansion_factor": 2}, "seed": 3},
        "generator": {**role, "backend": "test_metrics:DelayedScriptedGenerator",
                      "kwargs": {**role["kwargs"], "delay_s": 0.4}},
        "verifier": {**role, "backend": "scripted"},
        "budget": {"flops_per_problem": 5_000_000, "flops_total": 30_000_000},
        "engine": {"max_batch_requests": 2, "max_in_flight_batches": 1, "metrics_interval_s": 0.2},
        "output": {"progress": "off"}})
    pools = build_ray_pools(config, connect_ray=False)
    job = {"job_id": "metrics-job"}
    seen: list[float] = []  # expansions on the endpoint while the job ran
    in_flight: list[float] = []
    out: dict = {}
    try:
        with Engine(config, task, pools=pools) as engine:
            thread = threading.Thread(
                target=lambda: out.update(engine.run(problems, tmp_path / "metrics-job", progress=False)))
            thread.start()
            deadline = time.monotonic() + 120
            while thread.is_alive() and time.monotonic() < deadline:
                samples = scrape(port)
                seen.append(value(samples, "ray_ponder_expansions_total", **job) or 0.0)
                in_flight.append(value(samples, "ray_ponder_requests_in_flight",
                                       engine="metrics-job", role="generator") or 0.0)
                time.sleep(0.5)
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "the job did not finish in time"
            # after the job: its last report reaches the endpoint within a few exports
            deadline = time.monotonic() + 30
            while True:
                samples = scrape(port)
                finished = value(samples, "ray_ponder_problems_finished_total", **job)
                busy = value(samples, "ray_ponder_replica_busy_seconds_total", role="generator")
                if (finished == len(problems) and busy) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    finally:
        pools.shutdown()
    summary = out
    assert summary["num_problems"] == len(problems)
    moving = [v for v in seen if v > 0]
    assert len(moving) >= 2 and moving[-1] > moving[0], f"expansions never grew: {seen}"
    assert max(in_flight) > 0
    assert finished == len(problems)
    assert value(samples, "ray_ponder_problems_solved_total", **job) == summary["num_solved"]
    assert value(samples, "ray_ponder_flops_total", **job) == summary["total_flops"]
    assert value(samples, "ray_ponder_generated_tokens_total", **job) == (
        summary["tokens"]["generator"]["generated"])
    spent = value(samples, "ray_ponder_job_flops_spent", **job)
    assert 0 < spent == summary["total_flops"] <= value(samples, "ray_ponder_job_flops_cap", **job)
    assert value(samples, "ray_ponder_problem_flops_cap", **job) == 5_000_000
    assert busy > 0
    # every name the dashboard reads is on the endpoint (a cap only when set: both are here)
    names = {n for n, _, _ in samples}
    assert exported_names() <= names, exported_names() - names
