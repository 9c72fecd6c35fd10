"""What every strategy does the same way: build requests, grow the tree from results, pick an answer.

Strategies differ in *which* nodes they expand and keep; how a request is built
from a node, how a result becomes child nodes, how scores land on nodes and how
a set of finished paths becomes one Answer is the same for all of them, so it
lives here once.
"""

from __future__ import annotations

import math
from typing import Sequence

from ponder.search.aggregate import aggregate_scores, best_scored, majority_vote, weighted_vote
from ponder.search.messages import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from ponder.search.strategies.base import Answer, Strategy
from ponder.search.task import SearchTask, split_steps
from ponder.search.tree import Node, NodeStatus, Tree

SELECTIONS: tuple[str, ...] = ("majority", "weighted", "best")  # how finished paths become one answer


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    """Raise ValueError naming ``search.<name>``, the bad ``value`` and the valid ones."""
    if value not in valid:
        raise ValueError(f"search.{name} must be one of {', '.join(valid)}; got {value!r}")


def check_at_least(name: str, value: float, minimum: float) -> None:
    """Raise ValueError naming ``search.<name>`` if ``value < minimum``."""
    if not value >= minimum:
        raise ValueError(f"search.{name} must be >= {minimum}, got {value!r}")


# -- requests -------------------------------------------------------------------

def step_request(strategy: Strategy, node_id: int, n: int, seed: int,
                 temperature: float | None = None) -> GenerateRequest:
    """Ask for ``n`` one-step continuations of ``node_id``'s path (stop at the step delimiter)."""
    tree, params = strategy.tree, strategy.params
    return GenerateRequest(
        request_id=strategy.next_request_id(), prefix=tree.prefix(node_id), n=n,
        max_new_tokens=params.max_step_tokens, stop=(strategy.task.step_delimiter,),
        temperature=params.temperature if temperature is None else temperature,
        top_p=params.top_p, seed=seed, prefix_id=tree.prefix_id(node_id), prompt_end=len(tree.prompt))


def score_request(strategy: Strategy, node_ids: Sequence[int],
                  tails: dict[int, list[str]] | None = None) -> ScoreRequest:
    """Ask the verifier to score each node's path, extended by its rollout ``tails`` if given."""
    tree = strategy.tree
    tails = tails or {}
    paths = [tree.steps(node_id) + tails.get(node_id, []) for node_id in node_ids]
    return ScoreRequest(request_id=strategy.next_request_id(), prompt=tree.prompt, paths=paths,
                        prefix_id=tree.prefix_id(0))


# -- growing the tree -------------------------------------------------------------

def finish_if_terminal(tree: Tree, task: SearchTask, node: Node, ended: bool = False) -> None:
    """Mark ``node`` TERMINAL, with its extracted answer, if it ends a solution or hits max depth.

    ``ended``: the model ended its answer after this step (finish reason "eos").
    """
    if ended or task.is_terminal(node.text) or node.depth >= task.max_steps:
        node.status = NodeStatus.TERMINAL
        node.answer = task.extract_answer(tree.steps(node.node_id))


def add_children(tree: Tree, task: SearchTask, parent_id: int, result: GenerateResult,
                 merge_duplicates: bool = False) -> list[int]:
    """Hang one child per returned text under ``parent_id``; returns their node ids, in text order.

    ``result`` may hold fewer texts than its request asked for (the scheduler shrinks
    ``n`` to fit a budget); a parent that got none goes back to OPEN (or EXPANDED).

    Args:
        merge_duplicates: if True, a text equal to an existing sibling's adds no node;
            its entry in the returned list is that sibling's id (the same step is the
            same state, and splitting its statistics helps no search that keeps them).
    """
    siblings = {tree[c].text: c for c in tree[parent_id].children} if merge_duplicates else {}
    new_ids = []
    for i, text in enumerate(result.texts):
        if text in siblings:
            new_ids.append(siblings[text])
            continue
        token_ids = tuple(result.token_ids[i]) if i < len(result.token_ids) else ()
        logprob = result.cumulative_logprobs[i] if i < len(result.cumulative_logprobs) else 0.0
        node = tree.add_child(parent_id, text, token_ids, logprob=logprob)
        ended = i < len(result.finish_reasons) and result.finish_reasons[i] == "eos"
        finish_if_terminal(tree, task, node, ended)
        new_ids.append(node.node_id)
        if merge_duplicates:
            siblings[text] = node.node_id
    parent = tree[parent_id]
    if parent.status == NodeStatus.EXPANDING:
        parent.status = NodeStatus.EXPANDED if parent.children else NodeStatus.OPEN
    set_priors(tree, parent_id)
    return new_ids


def set_priors(tree: Tree, parent_id: int) -> None:
    """Priors of ``parent_id``'s children: a softmax of their generation logprobs over siblings."""
    children = [tree[c] for c in tree[parent_id].children]
    if not children:
        return
    top = max(c.logprob for c in children)
    weights = [math.exp(c.logprob - top) for c in children]  # shifted so exp() cannot overflow
    total = math.fsum(weights)
    for child, weight in zip(children, weights):
        child.prior = weight / total


def add_solution(tree: Tree, task: SearchTask, parent_id: int, text: str,
                 logprob: float = 0.0) -> int | None:
    """Split a whole-solution ``text`` into steps and hang them as a chain under ``parent_id``.

    Blank lines make no step (``ponder.search.task.split_steps``). Steps after the
    first terminal one (or beyond ``task.max_steps``) are dropped: they cannot change
    the answer the path states.

    Returns:
        The chain's last node id, or None if ``text`` holds no step.
    """
    steps = split_steps(text, task.step_delimiter)
    node = tree[parent_id]
    if not steps:
        return None
    for step in steps[: max(task.max_steps - node.depth, 0)]:
        node = tree.add_child(node.node_id, step)
        finish_if_terminal(tree, task, node)
        if node.is_terminal:
            break
    node.logprob = logprob  # the whole sample's logprob, kept on its leaf
    return node.node_id


def apply_scores(tree: Tree, node_ids: Sequence[int], result: ScoreResult) -> dict[int, list[float]]:
    """Store each node's own step scores; returns ``node_id -> full path scores`` (rollout included)."""
    full: dict[int, list[float]] = {}  # node_id -> scores of its scored path
    for node_id, scores in zip(node_ids, result.step_scores):
        node = tree[node_id]
        node.scores = list(scores[: node.depth])
        full[node_id] = list(scores)
    return full


def path_value(tree: Tree, node_id: int, agg: str, full_scores: list[float] | None = None) -> float:
    """A node's ranking value: its aggregated path score, or its rollout's last step score."""
    node = tree[node_id]
    if full_scores is not None and len(full_scores) > node.depth:
        return full_scores[-1]  # lookahead: the rollout's last step judges this node
    return aggregate_scores(node.scores, agg)


# -- answers ----------------------------------------------------------------------

def choose(tree: Tree, node_ids: Sequence[int], selection: str, agg: str) -> tuple[int | None, float | None]:
    """Pick one of the finished paths ``node_ids``.

    Args:
        selection: ``"majority"`` (most frequent answer), ``"weighted"`` (answer with the
            largest summed aggregated score) or ``"best"`` (the best-scored path).
        agg: step-score aggregation for ranking paths.

    Returns:
        ``(node_id, score)``: the best-scored path stating the winning answer and the vote
        share (or, for ``"best"``, its aggregated score); ``(None, None)`` if no path has
        an answer.
    """
    candidates = [n for n in node_ids if tree[n].answer is not None]
    if not candidates:
        return None, None
    answers = [tree[n].answer for n in candidates]
    scores = [aggregate_scores(tree[n].scores, agg) for n in candidates]
    if selection == "majority":
        winner, share = majority_vote(answers)
    elif selection == "weighted":
        winner, share = weighted_vote(answers, scores)
    else:
        winner, share = best_scored(answers, scores)
    picks = [i for i, a in enumerate(answers) if a == winner]
    best = max(picks, key=lambda i: scores[i])  # max keeps the first of equal scores
    return candidates[best], share


def best_partial(tree: Tree, agg: str) -> int | None:
    """The best-scored node of any depth: the best a search has when no path finished."""
    scored = [n for n in tree.nodes if n.scores]
    if not scored:
        return None
    return max(scored, key=lambda n: (aggregate_scores(n.scores, agg), n.depth)).node_id


def make_answer(strategy: Strategy, node_id: int | None, score: float | None,
                **extra: object) -> Answer:
    """The Answer for ``node_id``'s path (None: nothing yet) with the strategy's stop reason.

    A strategy still running reports ``"running"``; one that finished without any
    answer reports ``"no_answer"``.
    """
    tree = strategy.tree
    trace = tree.steps(node_id) if node_id is not None else []
    answer = tree[node_id].answer if node_id is not None else None
    if node_id is not None and answer is None:
        answer = strategy.task.extract_answer(trace)
    reason = strategy.stop_reason or "running"
    if reason == "done" and answer is None:
        reason = "no_answer"
    return Answer(problem_id=strategy.problem_id, answer=answer, trace=trace, score=score,
                  stop_reason=reason, num_nodes=len(tree), extra=dict(extra))


def answer_from(strategy: Strategy, node_ids: Sequence[int], selection: str, agg: str,
                **extra: object) -> Answer:
    """Choose among finished ``node_ids``; fall back to the best partial path if none has an answer."""
    node_id, score = choose(strategy.tree, node_ids, selection, agg)
    if node_id is None:
        node_id = best_partial(strategy.tree, agg)
        score = None if node_id is None else aggregate_scores(strategy.tree[node_id].scores, agg)
    return make_answer(strategy, node_id, score, **extra)
