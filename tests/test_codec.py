"""The msgpack state codec: plain data, allowlisted objects, shared references, externals,
and every strategy restored mid-search reaching the same answer as one never interrupted."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import msgpack
import pytest

from ponder.search import codec
from ponder.search.codec import CodecError, decode, encode
from ponder.search.messages import GenerateRequest, ScoreRequest
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedTask, ScriptedVerifier
from ponder.search.strategies import JobContext, get_strategy
from ponder.search.tree import NodeStatus, Tree

PROBLEM = ScriptedProblem("Q: codec\n", answer="42", num_steps=4, p_correct=0.6, wrong_answers=("7",))
TASK = ScriptedTask()
SIZES = {  # small but several rounds deep
    "best_of_n": {"n": 8}, "beam": {"beam_width": 2, "expansion_factor": 3, "lookahead": 1},
    "dvts": {"num_samples": 8, "beam_width": 4}, "rebase": {"width": 6},
    "mcts": {"num_simulations": 16, "rollout_depth": 1}, "compute_optimal": {"num_probe_samples": 6},
}


class Counter:
    """Request ids; passed to strategies as an external, never encoded."""

    def __init__(self, start: int = 0):
        self.next_id = start

    def __call__(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def test_plain_values_round_trip_with_their_types():
    value = {"t": (1, (2, "x")), "s": {3, 1}, "f": frozenset({"a"}), "big": 2**70, "neg": -(2**65),
             "b": b"\x00raw", 7: [None, True, 1.5, "é"], "status": NodeStatus.TERMINAL}
    back = decode(encode(value))
    assert back == value
    assert isinstance(back["t"], tuple) and isinstance(back["t"][1], tuple)
    assert isinstance(back["s"], set) and isinstance(back["f"], frozenset)
    assert back["status"] is NodeStatus.TERMINAL


def test_random_state_round_trips():
    rng = random.Random(5)
    rng.random()
    back = decode(encode(rng))
    assert [back.random() for _ in range(3)] == [rng.random() for _ in range(3)]


def test_tree_round_trips_with_every_node_field():
    tree = Tree("p", "Q\n")
    a = tree.add_child(0, "step a", token_ids=(1, 2), logprob=-0.5)
    b = tree.add_child(a.node_id, "Answer: 4")
    b.status, b.answer, b.scores = NodeStatus.TERMINAL, "4", [0.25, 0.75]
    tree.backpropagate(b.node_id, 0.5)
    back = decode(encode(tree))
    assert [tuple(n.children) for n in back.nodes] == [(1,), (2,), ()]
    for old, new in zip(tree.nodes, back.nodes):
        for name in type(old).__slots__:
            assert getattr(new, name) == getattr(old, name), name
    assert back.prefix(2) == tree.prefix(2) and back[2].status is NodeStatus.TERMINAL


def test_shared_objects_stay_shared_and_cycles_close():
    strategy = _make("beam")
    externals = {"task": TASK, "ids": strategy.next_request_id}
    back = decode(encode([strategy, strategy.tree], externals), externals)
    restored, tree = back
    assert restored.tree is tree
    assert restored.search.strategy is restored  # LevelSearch -> strategy -> LevelSearch
    assert restored.task is TASK


class NotAllowed:
    def __init__(self):
        self.x = 1


def test_unknown_class_is_refused_when_encoding():
    with pytest.raises(CodecError, match="test_codec:NotAllowed.*not on the codec's allowlist"):
        encode({"x": NotAllowed()})


def test_decoding_refuses_classes_off_the_allowlist_without_importing_them():
    name = "ponder_evil_module_never_imported"
    header = msgpack.packb(f"{name}:Thing") + msgpack.packb(0) + msgpack.packb({})
    data = msgpack.packb(msgpack.ExtType(codec.OBJECT, header))
    with pytest.raises(CodecError, match=f"refusing to decode class '{name}:Thing'"):
        decode(data)
    assert name not in sys.modules
    enum_data = msgpack.packb(msgpack.ExtType(codec.ENUM, msgpack.packb(["os:system", 1])))
    with pytest.raises(CodecError, match="refusing to decode class 'os:system'"):
        decode(enum_data)


def test_allow_adds_a_plugin_class():
    @dataclass(slots=True, frozen=True)
    class PluginState:
        depth: int
        seen: tuple

    codec.allow(PluginState)
    assert decode(encode(PluginState(3, ("a",)))) == PluginState(3, ("a",))


def test_missing_external_and_garbage_are_clear_errors():
    strategy = _make("best_of_n")
    data = encode(strategy, {"task": TASK, "ids": strategy.next_request_id})
    with pytest.raises(CodecError, match="needs external 'task'.*given: \\['ids'\\]"):
        decode(data, {"ids": Counter()})
    with pytest.raises(CodecError, match="malformed"):
        decode(data[: len(data) // 2], {"task": TASK, "ids": Counter()})
    with pytest.raises(CodecError):
        decode(b"\xc1garbage")


def test_a_bound_method_external_is_matched_by_equality():
    ids = iter(range(100))
    strategy = get_strategy("best_of_n")(Tree("p", PROBLEM.prompt), TASK,
                                         get_strategy("best_of_n").Params.from_dict({"n": 2}), 0,
                                         ids.__next__)
    fresh = Counter(50)
    back = decode(encode(strategy, {"task": TASK, "ids": ids.__next__}), {"task": TASK, "ids": fresh})
    assert back.next_request_id is fresh


# -- strategies mid-search -------------------------------------------------------------

def _make(name: str, ids: Counter | None = None):
    cls = get_strategy(name)
    return cls(Tree("p", PROBLEM.prompt), TASK, cls.Params.from_dict(SIZES[name]), seed=3,
               next_request_id=ids or Counter(), context=JobContext())


def _answer_all(requests, generator, verifier):
    gen = [r for r in requests if isinstance(r, GenerateRequest)]
    score = [r for r in requests if isinstance(r, ScoreRequest)]
    results = (generator.generate(gen) if gen else []) + (verifier.score(score) if score else [])
    return list(zip(gen + score, results))


def _round(strategy, generator, verifier) -> list:
    """Collect one round of requests; their (request, result) pairs, not yet delivered."""
    return _answer_all(strategy.requests(), generator, verifier)


def _finish(strategy, generator, verifier, delivered=()):
    for request, result in delivered:
        if not strategy.done:
            strategy.on_result(request, result)
    for _ in range(1000):
        if strategy.done:
            return strategy.answer()
        pairs = _round(strategy, generator, verifier)
        assert pairs, f"{strategy.name} waits for nothing"
        for request, result in pairs:
            if not strategy.done:
                strategy.on_result(request, result)
    raise AssertionError("did not finish")


def _canonical(tree: Tree) -> list:
    return [(n.parent_id, n.text, n.status, tuple(n.scores), n.answer, n.visits) for n in tree.nodes]


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("cut", [1, 2, 4])
def test_every_strategy_restored_mid_search_reaches_the_same_answer(name, cut):
    generator, verifier = ScriptedGenerator([PROBLEM], seed=1), ScriptedVerifier([PROBLEM], seed=1)
    ids = Counter()
    strategy = _make(name, ids)
    pairs = []
    for _ in range(cut):  # advance `cut` rounds, leaving the last round's results undelivered
        for request, result in pairs:
            if not strategy.done:
                strategy.on_result(request, result)
        pairs = _round(strategy, generator, verifier)
    if strategy.done:
        pytest.skip(f"{name} finished within {cut} rounds")
    data = encode(strategy, {"task": TASK, "next_request_id": ids})
    restored_ids = Counter(ids.next_id)
    restored = decode(data, {"task": TASK, "next_request_id": restored_ids})
    assert type(restored) is type(strategy) and restored is not strategy
    assert restored.next_request_id is restored_ids

    expected = _finish(strategy, generator, verifier, pairs)
    # The restored copy gets the very same results for the requests that were in flight.
    got = _finish(restored, generator, verifier, pairs)
    assert (got.answer, got.trace, got.score, got.stop_reason) == (
        expected.answer, expected.trace, expected.score, expected.stop_reason)
    assert _canonical(restored.tree) == _canonical(strategy.tree)
    assert restored_ids.next_id == ids.next_id  # the same requests were issued after the cut


def test_strategies_hold_no_mutable_container_twice():
    """Plain containers decode as separate copies, so no strategy may share one between objects."""
    for name in SIZES:
        strategy = _make(name)
        generator, verifier = ScriptedGenerator([PROBLEM], seed=1), ScriptedVerifier([PROBLEM], seed=1)
        for request, result in _round(strategy, generator, verifier):
            strategy.on_result(request, result)
        _round(strategy, generator, verifier)
        assert _shared_containers(strategy) == [], name


def _shared_containers(root) -> list[str]:
    seen_objects, seen_containers, shared = set(), {}, []
    stack = [(root, "root")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, (list, dict, set)):
            if id(value) in seen_containers:
                shared.append(f"{where} is also {seen_containers[id(value)]}")
                continue
            seen_containers[id(value)] = where
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack += [(v, f"{where}[{k!r}]") for k, v in items]
        elif isinstance(value, tuple):
            stack += [(v, f"{where}[{i}]") for i, v in enumerate(value)]
        elif type(value) in codec.allowed_classes().values() and not isinstance(value, NodeStatus):
            if id(value) not in seen_objects:
                seen_objects.add(id(value))
                stack += [(v, f"{where}.{k}") for k, v in codec._fields(value).items()]
    return shared
