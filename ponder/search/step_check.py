"""An exact step checker beside the learned verifier.

Some tasks can check a step exactly (game24: the arithmetic and the numbers
left; ``Task.check_step``). With ``search.step_check`` on, a verifier's scores
pass through ``checked_scores`` before the strategy sees them: from the first
step the checker rejects, the path scores 0, however much the verifier liked it.
Steps the checker cannot judge (it returns None) keep the verifier's score.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ponder.search.messages import ScoreRequest, ScoreResult

StepCheck = Callable[[str, Sequence[str]], "bool | None"]  # (problem_id, steps so far) -> last step ok?


def checked_scores(problem_id: str, request: ScoreRequest, result: ScoreResult,
                   check: StepCheck) -> ScoreResult:
    """``result`` with every path's scores zeroed from its first step ``check`` rejects."""
    out = []
    for steps, scores in zip(request.paths, result.step_scores):
        scores = list(scores)
        for j in range(min(len(steps), len(scores))):
            if check(problem_id, steps[:j + 1]) is False:
                scores[j:] = [0.0] * (len(scores) - j)
                break
        out.append(scores)
    return ScoreResult(result.request_id, out, result.num_prompt_tokens, result.num_cached_prompt_tokens)
