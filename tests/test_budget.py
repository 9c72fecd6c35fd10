"""FLOP accounting: formulas, reservations, caps, checkpoints."""

from dataclasses import replace

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder.search.budget import BudgetError, BudgetManager
from ponder.search.flops import (ModelSpec, StepCosts, actual_flops, default_token_bound, flops,
                                 worst_case_flops, worst_case_tokens)
from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult

SPEC = ModelSpec("toy", num_params=1000, num_layers=2, d_model=8)  # attention: 32 FLOPs per position


def _gen_result(request_id, num_prompt, num_cached, num_generated):
    return GenerateResult(request_id, [], [], [], num_prompt, num_cached, num_generated)


# -- formulas ---------------------------------------------------------------------------------

def test_generate_worst_case_by_hand():
    request = GenerateRequest(0, prefix="abcd", n=3, max_new_tokens=10)
    # P_ub = 4 bytes + 16 = 20; each sample 20 + 10 = 30 positions; 3 samples compute 90 tokens.
    assert worst_case_tokens(request) == (90, 30)
    assert worst_case_flops(request, SPEC) == 90 * (2 * 1000 + 32 * 30) == 266_400


def test_generate_worst_case_counts_a_shared_prompt_once():
    request = GenerateRequest(0, prefix="abcd", n=3, max_new_tokens=10)
    # prompt_once: the 20-token prompt bound once, then 10 a sample; context still 30.
    assert worst_case_tokens(request, prompt_once=True) == (20 + 3 * 10, 30)
    once = replace(SPEC, prompt_once=True)
    assert worst_case_flops(request, once) == 50 * (2000 + 32 * 30) < worst_case_flops(request, SPEC)
    # A prompt computed once and cached for the rest still settles under that reservation.
    result = _gen_result(0, num_prompt=3 * 5, num_cached=2 * 5, num_generated=30)
    assert actual_flops(request, result, once) <= worst_case_flops(request, once)


def test_step_costs_price_a_step_as_its_reservation():
    for once in (False, True):
        costs = StepCosts(replace(SPEC, prompt_once=once), SPEC)
        request = GenerateRequest(0, prefix="abcd", n=3, max_new_tokens=10)
        prompt = costs.token_bound("abcd")
        assert costs.generate(prompt, 3, 10) == worst_case_flops(request, costs.generator)
        # Scoring the 3 children: paths of at most the prompt plus one step, none cached.
        assert costs.score(prompt, 3, 10) == 3 * flops(SPEC, prompt + 10, prompt + 10)


def test_generate_actual_by_hand():
    request = GenerateRequest(0, prefix="abcd", n=3, max_new_tokens=10)
    result = _gen_result(0, num_prompt=15, num_cached=10, num_generated=12)
    # computed 15 - 10 + 12 = 17; context ceil(15/3) + ceil(12/3) = 9
    assert actual_flops(request, result, SPEC) == 17 * (2000 + 32 * 9) == 38_896


def test_score_worst_case_and_actual_by_hand():
    request = ScoreRequest(0, prompt="Q", paths=[["a", "b"], ["c"]])
    # "Q\na\nb" is 5 bytes -> 21, "Q\nc" is 3 bytes -> 19
    assert worst_case_tokens(request) == (40, 21)
    assert worst_case_flops(request, SPEC) == 40 * (2000 + 32 * 21) == 106_880
    result = ScoreResult(0, [[0.5, 0.5], [0.5]], num_prompt_tokens=8, num_cached_prompt_tokens=2)
    assert actual_flops(request, result, SPEC) == 6 * (2000 + 32 * 4) == 12_768
    assert worst_case_flops(ScoreRequest(1, "Q", []), SPEC) == 0


def test_token_bound_is_configurable_and_counts_utf8_bytes():
    assert default_token_bound("é") == 2 + 16
    request = GenerateRequest(0, prefix="hello", n=2, max_new_tokens=5)
    assert worst_case_tokens(request, token_bound=lambda text: len(text)) == (20, 10)
    assert worst_case_flops(request, SPEC, token_bound=len) == flops(SPEC, 20, 10)


def test_bad_counts_and_requests_are_rejected():
    request = GenerateRequest(0, prefix="x", n=1)
    with pytest.raises(ValueError, match="cached=5"):
        actual_flops(request, _gen_result(0, 3, 5, 1), SPEC)
    with pytest.raises(ValueError, match="n=0"):
        worst_case_flops(GenerateRequest(0, prefix="x", n=0), SPEC)


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=40), n=st.integers(1, 8), max_new=st.integers(0, 50), data=st.data())
def test_actual_never_exceeds_worst_case_within_the_bound(prefix, n, max_new, data):
    request = GenerateRequest(0, prefix=prefix, n=n, max_new_tokens=max_new)
    bound = default_token_bound(prefix)
    prompts = data.draw(st.lists(st.integers(0, bound), min_size=n, max_size=n))
    generated = data.draw(st.lists(st.integers(0, max_new), min_size=n, max_size=n))
    cached = data.draw(st.integers(0, sum(prompts)))
    result = _gen_result(0, sum(prompts), cached, sum(generated))
    assert actual_flops(request, result, SPEC) <= worst_case_flops(request, SPEC)


@settings(max_examples=100, deadline=None)
@given(paths=st.lists(st.lists(st.text(max_size=12), max_size=4), min_size=1, max_size=5),
       data=st.data())
def test_score_actual_never_exceeds_worst_case_within_the_bound(paths, data):
    request = ScoreRequest(0, prompt="Solve:", paths=paths)
    bounds = [default_token_bound("\n".join(["Solve:", *p])) for p in paths]
    tokens = [data.draw(st.integers(0, b)) for b in bounds]
    cached = data.draw(st.integers(0, sum(tokens)))
    result = ScoreResult(0, [], sum(tokens), cached)
    assert actual_flops(request, result, SPEC) <= worst_case_flops(request, SPEC)


# -- the property: caps hold under any interleaving ------------------------------------------

caps = st.one_of(st.none(), st.integers(0, 2_000))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_cap=caps, problem_cap=caps, data=st.data())
def test_caps_hold_under_random_interleaving(job_cap, problem_cap, data):
    budget = BudgetManager(job_cap, problem_cap)
    problem_ids = [f"p{i}" for i in range(data.draw(st.integers(1, 4)))]
    cap_of = {}
    for pid in problem_ids:
        own = data.draw(st.one_of(st.none(), st.integers(0, 1_500)), label=f"cap {pid}")
        budget.add_problem(pid, own)
        cap_of[pid] = problem_cap if own is None else own
    spent = dict.fromkeys(problem_ids, 0)  # the reference ledger
    reserved = dict.fromkeys(problem_ids, 0)
    open_ = []
    for _ in range(data.draw(st.integers(1, 40))):
        if open_ and data.draw(st.booleans()):  # complete one in-flight request, in random order
            reservation = open_.pop(data.draw(st.integers(0, len(open_) - 1)))
            reserved[reservation.problem_id] -= reservation.flops
            if data.draw(st.integers(0, 4)) == 0:
                budget.release(reservation)
            else:
                actual = data.draw(st.integers(0, reservation.flops))
                budget.settle(reservation, actual)
                spent[reservation.problem_id] += actual
        else:
            pid = data.draw(st.sampled_from(problem_ids))
            amount = data.draw(st.integers(0, 600))
            model = data.draw(st.sampled_from(["generator", "verifier"]))
            would_exceed = (
                (cap_of[pid] is not None and spent[pid] + reserved[pid] + amount > cap_of[pid])
                or (job_cap is not None
                    and sum(spent.values()) + sum(reserved.values()) + amount > job_cap))
            reservation = budget.reserve(pid, amount, model)
            assert (reservation is None) == would_exceed
            if reservation is not None:
                reserved[pid] += amount
                open_.append(reservation)
        _assert_ledger(budget, cap_of, job_cap, spent, reserved)
        assert budget.num_open_reservations == len(open_)
    for reservation in open_:
        actual = data.draw(st.integers(0, reservation.flops))
        budget.settle(reservation, actual)
        spent[reservation.problem_id] += actual
        reserved[reservation.problem_id] -= reservation.flops
    _assert_ledger(budget, cap_of, job_cap, spent, reserved)
    assert budget.num_open_reservations == 0 and budget.job_reserved == 0
    assert budget.job_spent == sum(spent.values())
    assert sum(budget.spent_by_model().values()) == budget.job_spent


def _assert_ledger(budget, cap_of, job_cap, spent, reserved):
    for pid, cap in cap_of.items():
        assert budget.spent(pid) == spent[pid] and budget.reserved(pid) == reserved[pid]
        assert cap is None or budget.spent(pid) + budget.reserved(pid) <= cap
        assert sum(budget.spent_by_model(pid).values()) == spent[pid]
    assert budget.job_spent == sum(spent.values())
    assert budget.job_reserved == sum(reserved.values())
    assert job_cap is None or budget.job_spent + budget.job_reserved <= job_cap


# -- manager behaviour ------------------------------------------------------------------------

def test_remaining_is_the_tighter_cap():
    budget = BudgetManager(flops_total=1000, flops_per_problem=300)
    budget.add_problem("a")
    budget.add_problem("b", cap=5000)
    r = budget.reserve("b", 800)
    assert budget.remaining("a") == 200  # the job has 200 left, below a's 300
    assert budget.remaining("b") == 200
    assert budget.remaining("b", count_reserved=False) == 1000
    assert budget.job_remaining == 200
    budget.settle(r, 100)
    assert budget.remaining("a") == 300 and budget.job_remaining == 900
    unlimited = BudgetManager()
    unlimited.add_problem("x")
    assert unlimited.remaining("x") is None and unlimited.job_remaining is None


def test_settle_more_than_reserved_raises_and_leaves_ledger_unchanged():
    budget = BudgetManager(flops_per_problem=100)
    budget.add_problem("a")
    r = budget.reserve("a", 50, "verifier")
    with pytest.raises(BudgetError, match="spent 51 FLOPs but reserved only 50"):
        budget.settle(r, 51)
    assert budget.reserved("a") == 50 and budget.spent("a") == 0 and budget.num_open_reservations == 1
    budget.settle(r, 50)
    assert budget.spent_by_model("a") == {"generator": 0, "verifier": 50}
    with pytest.raises(BudgetError, match="not open"):
        budget.settle(r, 0)
    with pytest.raises(BudgetError, match="not open"):
        budget.release(r)


def test_release_spends_nothing():
    budget = BudgetManager(flops_total=100)
    budget.add_problem("a")
    r = budget.reserve("a", 100)
    assert budget.reserve("a", 1) is None
    budget.release(r)
    assert budget.job_spent == 0 and budget.job_reserved == 0
    assert budget.reserve("a", 100) is not None


def test_set_problem_cap_clamps_to_spent_plus_reserved():
    budget = BudgetManager(flops_per_problem=1000)
    budget.add_problem("a")
    budget.settle(budget.reserve("a", 300), 200)
    budget.reserve("a", 100)
    assert budget.set_problem_cap("a", 0) == 300  # frozen: nothing more can be reserved
    assert budget.reserve("a", 1) is None
    assert budget.set_problem_cap("a", 5000) == 5000 and budget.remaining("a") == 4700
    assert budget.set_problem_cap("a", None) is None and budget.remaining("a") is None


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"flops_total must be an int >= 0 or None.*-1"):
        BudgetManager(flops_total=-1)
    assert BudgetManager(flops_total=1e15).flops_total == 10**15
    budget = BudgetManager()
    budget.add_problem("a")
    with pytest.raises(ValueError, match="already in the budget"):
        budget.add_problem("a")
    with pytest.raises(KeyError, match="'nope' is not in the budget"):
        budget.reserve("nope", 1)
    with pytest.raises(ValueError, match="unknown model 'critic'; valid: generator, verifier"):
        budget.reserve("a", 1, "critic")
    with pytest.raises(ValueError, match="flops must be"):
        budget.reserve("a", -5)


def test_state_round_trips_through_msgpack():
    budget = BudgetManager(flops_total=10**18, flops_per_problem=10**12)
    budget.add_problem("a")
    budget.add_problem("b", cap=7)
    budget.settle(budget.reserve("a", 500, "generator"), 400)
    budget.settle(budget.reserve("a", 90, "verifier"), 90)
    still_open = budget.reserve("b", 6, "verifier")
    state = msgpack.unpackb(msgpack.packb(budget.to_state()), strict_map_key=False)
    restored = BudgetManager.from_state(state)
    assert restored.to_state() == budget.to_state()
    assert restored.spent("a") == 490 and restored.reserved("b") == 6 and restored.cap("b") == 7
    assert restored.spent_by_model() == {"generator": 400, "verifier": 90}
    assert restored.num_open_reservations == 1
    restored.settle(still_open, 6)  # reservations come back open and settle as before
    assert restored.spent("b") == 6 and restored.job_reserved == 0
    assert restored.reserve("b", 2) is None  # the cap came back too: 6 spent of 7
    assert restored.job_remaining == 10**18 - 496


def test_reserved_ever_sums_worst_cases_whatever_was_spent():
    budget = BudgetManager(flops_per_problem=1_000)
    budget.add_problem("p")
    first = budget.reserve("p", 400)
    budget.settle(first, 100)  # a cache hit: spent far less than reserved
    budget.release(budget.reserve("p", 300))  # released unused: still asked for
    assert budget.reserve("p", 901) is None  # refused: over the cap, not counted
    assert budget.spent("p") == 100 and budget.reserved("p") == 0
    assert budget.reserved_ever("p") == 700
