"""Actors, the backend factory and pools end to end on a real local Ray (scripted backends).

One Ray session serves the whole module (starting Ray costs seconds on a shared box).
"""

from __future__ import annotations

import os
import time

import pytest
import ray

from ponder.actors import BackendSpec, GeneratorActor, VerifierActor, build_backend, collect
from ponder.actors.factory import spec_from_config
from ponder.cluster.pools import build_pool, build_pools
from ponder.cluster.runtime import connect
from ponder.search.messages import (GenerateRequest, GenerateResult, ScoreRequest, ScoreResult,
                                    pack, unpack)
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedVerifier

PROBLEMS = tuple(ScriptedProblem(prompt=f"problem {i}?\n", answer=str(i), p_correct=0.6)
                 for i in range(4))
GEN = dict(backend="scripted", num_replicas=2, num_cpus=0.25, kwargs=dict(problems=PROBLEMS, seed=3))
VER = dict(backend="scripted", num_replicas=1, num_cpus=0.25, kwargs=dict(problems=PROBLEMS, seed=3))


def gen_requests(start: int, count: int) -> list[GenerateRequest]:
    return [GenerateRequest(request_id=start + i, prefix=PROBLEMS[i % 4].prompt, n=2, seed=i,
                            prefix_id=f"p{i % 4}:0") for i in range(count)]


def score_requests(start: int, count: int) -> list[ScoreRequest]:
    return [ScoreRequest(request_id=start + i, prompt=PROBLEMS[i % 4].prompt,
                         paths=[["step 1: right", "step 2: wrong 0"]], prefix_id=f"p{i % 4}:0")
            for i in range(count)]


# -- without Ray ------------------------------------------------------------------------

def test_unknown_backend_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'tgi'; valid: embedded, hf, vllm, scripted"):
        build_backend(BackendSpec("tgi"), "generator")
    with pytest.raises(ValueError, match="unknown backend role"):
        build_backend(BackendSpec("scripted"), "critic")


def test_spec_from_config_passes_model_path_parallelism_and_threads():
    spec = spec_from_config(dict(backend="vllm", model_path="/m", tensor_parallel_size=2,
                                 num_cpus=4, kwargs={"dtype": "bfloat16"}))
    assert spec.kwargs == {"dtype": "bfloat16", "model_path": "/m", "tensor_parallel_size": 2}
    assert spec.num_threads == 4
    assert spec_from_config(dict(backend="hf", num_cpus=0.5)).num_threads == 1


def test_actor_classes_answer_like_their_backend_in_process():
    spec = BackendSpec("scripted", dict(problems=PROBLEMS, seed=3))
    requests = gen_requests(0, 6)
    assert GeneratorActor(spec).generate(requests) == ScriptedGenerator(PROBLEMS, seed=3).generate(requests)
    scores = score_requests(0, 3)
    assert VerifierActor(spec).score(scores) == ScriptedVerifier(PROBLEMS, seed=3).score(scores)
    info = GeneratorActor(spec).ping()
    assert (info.role, info.backend, info.pid, info.num_requests) == ("generator", "scripted", os.getpid(), 0)


def test_packed_calls_answer_like_plain_ones():
    spec = BackendSpec("scripted", dict(problems=PROBLEMS, seed=3))
    requests, scores = gen_requests(0, 6), score_requests(0, 3)
    assert unpack(GeneratorActor(spec).generate_packed(pack(requests))) == \
        ScriptedGenerator(PROBLEMS, seed=3).generate(requests)
    assert unpack(VerifierActor(spec).score_packed(pack(scores))) == \
        ScriptedVerifier(PROBLEMS, seed=3).score(scores)


def test_prompt_counts_and_renders_are_none_for_a_backend_without_a_tokenizer():
    actor = GeneratorActor(BackendSpec("scripted", dict(problems=PROBLEMS, seed=3)))
    assert actor.count_prompt_tokens(gen_requests(0, 2)) is None
    assert actor.render_prompts(gen_requests(0, 2)) is None


def test_the_wire_format_round_trips_every_message_class():
    batches = [
        [GenerateRequest(1, "xz", n=2, stop=("\n", "END"), seed=None, prefix_id="p:0", prompt_end=1),
         GenerateRequest(2, "y\u00e9", temperature=0.0, top_p=0.9, seed=7)],
        [GenerateResult(3, ["a", ""], [[1, 2], []], [-0.5, -1e-9], 6, 3, 2, ["stop", "length"])],
        [ScoreRequest(4, "q", [["s1", "s2"], []], prefix_id="p:1")],
        [ScoreResult(5, [[0.25, 1.0], []], 9, 4)],
        [],
    ]
    for batch in batches:
        assert unpack(pack(batch)) == batch
    assert unpack(pack(batches[0]))[0].stop == ("\n", "END")  # a tuple again, as sent
    numpy = pytest.importorskip("numpy")
    with_numpy = [GenerateResult(6, ["a"], [numpy.array([4, 5])], [numpy.float32(-1.5)], 1, 0, 1)]
    assert unpack(pack(with_numpy))[0].token_ids == [[4, 5]]  # backends' numpy values go as plain data
    with pytest.raises(TypeError, match="one message class"):
        pack([batches[0][0], batches[1][0]])


def test_a_temp_dir_too_long_for_ray_sockets_is_refused_before_starting():
    with pytest.raises(ValueError, match="ray.temp_dir .* too long .* at most 43 characters"):
        connect(temp_dir="/tmp/" + "x" * 60)
    assert not ray.is_initialized()


# -- on Ray -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pools(ray_runtime):
    built = build_pools(GEN, VER, max_in_flight_batches=2)
    yield built
    built.shutdown()


@pytest.mark.ray
def test_local_runtime_uses_a_short_private_temp_dir(ray_runtime):
    assert ray_runtime.is_local and ray_runtime.owns_temp_dir
    assert ray_runtime.temp_dir.startswith("/tmp/ponder-ray-") and len(ray_runtime.temp_dir) < 60
    with pytest.raises(RuntimeError, match="already initialized"):
        connect(num_cpus=1)


@pytest.mark.ray
def test_pools_return_every_result_once_and_match_the_backend(pools):
    gen, ver = pools.generator, pools.verifier
    assert gen.model_spec() == ScriptedGenerator(PROBLEMS).model_spec()
    assert ver.model_spec() == ScriptedVerifier(PROBLEMS).model_spec()
    batches = [gen_requests(100 * b, 8) for b in range(5)]  # 5 batches, 2 replicas x 2 slots
    scores = score_requests(1000, 6)
    for batch in batches:
        gen.dispatch(batch)
    ver.dispatch(scores[:3])
    ver.dispatch(scores[3:])
    assert gen.num_queued > 0  # the fifth batch waits for a slot
    got = []
    while gen.num_in_flight or ver.num_in_flight:
        got += collect(pools.all(), timeout=5)
    expected = ScriptedGenerator(PROBLEMS, seed=3).generate([r for b in batches for r in b])
    expected += ScriptedVerifier(PROBLEMS, seed=3).score(scores)
    key = lambda r: r.request_id  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)
    assert gen.loads() == [0, 0] and gen.num_queued == 0 and gen.stats()["num_failures"] == 0
    served = [info.num_requests for info in gen.replica_info()]
    assert sum(served) == 40 and min(served) > 0  # both replicas took work


@pytest.mark.ray
def test_a_request_that_makes_the_backend_raise_fails_alone(pools):
    gen = pools.generator
    good = gen_requests(5000, 4)
    poison = GenerateRequest(request_id=5999, prefix="not a scripted prompt", prefix_id="p0:0")
    gen.dispatch(good[:2] + [poison] + good[2:])
    got = []
    while gen.num_in_flight:
        got += gen.poll(timeout=5)
    assert sorted(r.request_id for r in got) == [r.request_id for r in good]
    assert gen.pop_failed() == [poison] and gen.pop_failed() == []
    assert gen.stats()["num_given_up"] == 1 and "starts with none" in gen.last_error
    assert gen.stats()["num_healthy"] == 2  # a backend error is not a dead replica


@pytest.mark.ray
def test_a_backend_that_cannot_start_is_reported_and_cleaned_up(ray_runtime):
    before = ray.available_resources().get("CPU", 0)
    bad = dict(backend="scripted", num_cpus=0.25, kwargs={"no_such_argument": 1})
    with pytest.raises(RuntimeError, match="generator replica .scripted. failed to start.*no_such_argument"):
        build_pool(bad, "generator", timeout_s=60)
    deadline = time.monotonic() + 20  # Ray frees resources asynchronously
    while ray.available_resources().get("CPU", 0) < before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(before)


@pytest.mark.ray
def test_unplaceable_replicas_time_out_with_the_request_and_cluster_named(ray_runtime):
    with pytest.raises(TimeoutError, match=r"verifier: could not place 1 replica\(s\) of \{'CPU': 64"):
        build_pool(dict(backend="scripted", num_cpus=64), "verifier", timeout_s=1)
