"""The scripted fake backends: deterministic, exact token counts, a verifier that tells right from wrong."""

from __future__ import annotations

import pytest

from ponder.search.flops import actual_flops, worst_case_flops
from ponder.search.messages import GenerateRequest, ScoreRequest
from ponder.search.scripted import ScriptedGenerator, ScriptedProblem, ScriptedTask, ScriptedVerifier

PROBLEM = ScriptedProblem("Q: scripted\n", answer="42", num_steps=3, p_correct=0.5)
OTHER = ScriptedProblem("Q: other\n", answer="5", num_steps=2, p_correct=0.9)


def step_request(request_id: int, prefix: str, n: int = 4, seed: int | None = 1, **kw) -> GenerateRequest:
    return GenerateRequest(request_id, prefix, n=n, stop=("\n",), seed=seed, **kw)


def test_same_seed_same_samples_and_batching_does_not_matter():
    gen = ScriptedGenerator([PROBLEM, OTHER], seed=3)
    a = step_request(0, PROBLEM.prompt, n=8, seed=11)
    b = step_request(1, OTHER.prompt + "step 1: right\n", n=8, seed=12)
    together = gen.generate([a, b])
    alone = gen.generate([b]) + gen.generate([a])
    assert [r.texts for r in together] == [alone[1].texts, alone[0].texts]
    other_seed = gen.generate([step_request(0, PROBLEM.prompt, n=8, seed=99)])[0]
    assert other_seed.texts != together[0].texts
    assert gen.num_calls == 4 and gen.num_requests == 5 and gen.num_texts == 40


def test_token_counts_follow_the_char_convention():
    gen = ScriptedGenerator([PROBLEM])
    prefix = PROBLEM.prompt + "step 1: right\n"
    result = gen.generate([step_request(0, prefix, n=3)])[0]
    assert result.num_prompt_tokens == 3 * len(prefix)
    assert result.num_cached_prompt_tokens == 2 * len(prefix)
    # A one-step sample also generates the delimiter it stopped at.
    assert result.num_generated_tokens == sum(len(t) + 1 for t in result.texts)
    assert [len(ids) for ids in result.token_ids] == [len(t) for t in result.texts]
    assert result.finish_reasons == ["stop"] * 3


def test_step_branches_follow_p_correct():
    sure = ScriptedProblem("Q: sure\n", p_correct=1.0)
    never = ScriptedProblem("Q: never\n", p_correct=0.0)
    gen = ScriptedGenerator([sure, never])
    assert set(gen.generate([step_request(0, sure.prompt, n=20)])[0].texts) == {"step 1: right"}
    wrong = gen.generate([step_request(0, never.prompt, n=20)])[0].texts
    assert all(t.startswith("step 1: wrong") for t in wrong) and len(set(wrong)) > 1
    # Off the track a path never comes back to it.
    off = gen.generate([step_request(0, sure.prompt + "step 1: wrong 0\n", n=20)])[0]
    assert all("wrong" in t for t in off.texts)


def test_greedy_sampling_takes_the_most_likely_branch():
    gen = ScriptedGenerator([PROBLEM, OTHER])
    greedy = gen.generate([step_request(0, OTHER.prompt, n=3, temperature=0.0)])[0]
    assert greedy.texts == ["step 1: right"] * 3
    likely_wrong = ScriptedProblem("Q: likely wrong\n", p_correct=0.1, num_wrong=2)
    gen = ScriptedGenerator([likely_wrong])
    texts = gen.generate([step_request(0, likely_wrong.prompt, n=2, temperature=0.0)])[0].texts
    assert texts == ["step 1: wrong 0"] * 2


def test_whole_solutions_end_in_an_answer_and_truncate_at_the_token_limit():
    gen = ScriptedGenerator([PROBLEM])
    task = ScriptedTask()
    full = gen.generate([GenerateRequest(0, PROBLEM.prompt, n=6, max_new_tokens=200, stop=(), seed=5)])[0]
    for text in full.texts:
        steps = text.split("\n")
        assert len(steps) == PROBLEM.num_steps and task.is_terminal(steps[-1])
    assert full.num_generated_tokens == sum(map(len, full.texts))
    cut = gen.generate([GenerateRequest(1, PROBLEM.prompt, n=2, max_new_tokens=10, stop=(), seed=5)])[0]
    assert cut.finish_reasons == ["length", "length"] and all(len(t) == 10 for t in cut.texts)


def test_verifier_scores_the_track_high_and_everything_after_a_mistake_low():
    ver = ScriptedVerifier([PROBLEM], noise=0.05)
    right = [PROBLEM.correct_step(d) for d in (1, 2, 3)]
    wrong = [right[0], PROBLEM.wrong_step(2, 1), PROBLEM.wrong_step(3, 0)]
    scores = ver.score([ScoreRequest(0, PROBLEM.prompt, [right, wrong])])[0].step_scores
    assert all(s >= 0.85 for s in scores[0])
    assert scores[1][0] == scores[0][0]  # the shared first step gets the same score
    assert all(s <= 0.15 for s in scores[1][1:])
    again = ScriptedVerifier([PROBLEM], noise=0.05).score([ScoreRequest(7, PROBLEM.prompt, [wrong])])[0]
    assert again.step_scores == [scores[1]]


def test_verifier_token_counts_share_the_prompt():
    ver = ScriptedVerifier([PROBLEM])
    paths = [["step 1: right"], ["step 1: wrong 0", "step 2: wrong 1"]]
    result = ver.score([ScoreRequest(0, PROBLEM.prompt, paths)])[0]
    texts = ["\n".join([PROBLEM.prompt, *p]) for p in paths]
    assert result.num_prompt_tokens == sum(map(len, texts))
    assert result.num_cached_prompt_tokens == len(PROBLEM.prompt)


def test_results_never_cost_more_than_the_budget_reserves():
    gen, ver = ScriptedGenerator([PROBLEM]), ScriptedVerifier([PROBLEM])
    requests = [step_request(0, PROBLEM.prompt, n=5),
                GenerateRequest(1, PROBLEM.prompt, n=4, max_new_tokens=12, stop=(), seed=2),
                GenerateRequest(2, PROBLEM.prompt, n=4, max_new_tokens=500, stop=(), seed=2)]
    for request, result in zip(requests, gen.generate(requests)):
        spec = gen.model_spec()
        assert 0 < actual_flops(request, result, spec) <= worst_case_flops(request, spec)
    score = ScoreRequest(3, PROBLEM.prompt, [["step 1: right", "step 2: right"], ["step 1: wrong 2"]])
    result = ver.score([score])[0]
    assert 0 < actual_flops(score, result, ver.model_spec()) <= worst_case_flops(score, ver.model_spec())


def test_instant_mode_makes_generic_steps_that_end():
    gen = ScriptedGenerator(instant_steps=3)
    texts = gen.generate([step_request(0, "any\nprompt\ninstant step 1.0\n", n=2, seed=None)])[0].texts
    assert texts == ["instant step 2.0", "instant step 2.1"]
    seeded = gen.generate([step_request(0, "any\nprompt\ninstant step 1.0\n", n=2, seed=7)])[0].texts
    assert seeded == ["instant step 2.7", "instant step 2.8"]  # another request, other samples
    last = gen.generate([step_request(0, "any\nprompt\ninstant step 1.0\n" + texts[0] + "\n", n=1)])[0].texts
    assert ScriptedTask().is_terminal(last[0])
    whole = gen.generate([GenerateRequest(0, "any prompt\n", n=1, max_new_tokens=100, stop=())])[0]
    assert whole.texts[0].split("\n")[-1].startswith("Answer:")
    ver = ScriptedVerifier(instant=True)
    scores = ver.score([ScoreRequest(0, "whatever", [["a", "b"]])])[0].step_scores[0]
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_unknown_prompt_and_duplicate_prompts_are_rejected():
    gen = ScriptedGenerator([PROBLEM])
    with pytest.raises(ValueError, match="none of the 1 scripted problems"):
        gen.generate([step_request(0, "Q: unknown\n")])
    with pytest.raises(ValueError, match="distinct prompts"):
        ScriptedVerifier([PROBLEM, PROBLEM])


def test_task_extracts_answers_only_from_answer_lines():
    task = ScriptedTask()
    assert task.extract_answer(["step 1: right", "Answer: 42"]) == "42"
    assert task.extract_answer(["step 1: right"]) is None
    assert task.extract_answer([]) is None


def test_model_specs_are_small_and_named_scripted():
    for backend in (ScriptedGenerator(), ScriptedVerifier()):
        spec = backend.model_spec()
        assert "scripted" in spec.name and 0 < spec.num_params < 10_000
