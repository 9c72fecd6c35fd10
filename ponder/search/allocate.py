"""The compute-optimal allocator: who gets the job's remaining FLOPs, and which search they run.

Snell et al. (2024) found that the best test-time strategy depends on a
problem's difficulty, and that difficulty can be estimated from the model's own
samples and the verifier's view of them. The ``compute_optimal`` strategy
samples a cheap probe per problem and reports a ``DifficultyEstimate`` here; the
``Allocator`` (one per job, shared through ``JobContext.shared``) then:

1. Bins each problem (``AllocationPolicy.classify``):
   - easy: the probe's majority answer holds at least ``easy_agreement`` of its
     samples and the verifier scores it at least ``easy_score``;
   - hopeless: no sample answered, or none scores ``hopeless_score`` or more;
   - medium: some answer scores at least ``medium_score``;
   - hard: the rest (the verifier sees something, but is not convinced).
2. Waits until every problem that registered has reported (or left), then splits
   a pool of FLOPs over that group in proportion to the bin weights (medium 1.0,
   hard 0.5, easy 0.1, hopeless 0): search pays most where the model sometimes
   gets it right, some where it rarely does, little where the probe already
   agrees, and nothing where nothing is in reach. The pool is:
   - with a job cap: the job's remaining FLOPs, less the headroom still granted
     to problems decided earlier, less a fair share kept for problems expected
     (``num_problems``) but not yet registered;
   - without a job cap: the group's own per-problem remaining FLOPs, moved
     between its problems (a budget-neutral reallocation);
   - without any cap, or without a budget: no pool; see the fixed rule below.
   Each grant is enforced with ``BudgetManager.set_problem_cap(spent + grant)``;
   hopeless problems are frozen at what they spent.
3. Picks the phase-2 search per bin: easy -> more samples and a majority vote
   (``best_of_n``), medium -> ``beam``, hard -> ``dvts`` (wider and more diverse),
   hopeless -> ``stop`` with the best answer so far. Its size is the grant over
   the probe's cost per sample (times ``sample_cost`` for the tree searches,
   which re-score paths at every level), at most ``max_num_samples``. The probe's
   cost here is what its requests *reserved* (their worst cases, ``worst_case``),
   not what they spent: phase 2 must fit its reservations under the grant, and
   spending depends on prefix-cache luck. Beam search is the exception
   (``paced``): it narrows its levels to what its cap has left, so it is sized by
   what the probe spent and trims itself if that was optimistic. A search sized
   from spending that cannot narrow would be too wide whenever warm caches made
   the probe look cheap, and stop on budget before its last levels.

The fixed rule (no budget, or nothing capped): decide at once, without waiting
for other problems, with ``fixed_num_samples * weight`` phase-2 samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ponder.search.aggregate import majority_vote

BINS: tuple[str, ...] = ("easy", "medium", "hard", "hopeless")
STOP = "stop"  # the phase-2 "strategy" of a problem that gets nothing more


@dataclass(slots=True)
class DifficultyEstimate:
    """What one problem's probe says about its difficulty."""

    problem_id: str
    num_samples: int  # probe samples that came back
    agreement: float  # share of all probe samples that state the majority answer
    majority_score: float  # best aggregated verifier score among the majority answer's samples
    best_score: float  # best aggregated verifier score of any answered sample
    spent: int = 0  # FLOPs the probe cost; 0 if unknown
    worst_case: int = 0  # FLOPs its requests reserved (their worst cases, cache-blind); 0 if unknown


def estimate_difficulty(problem_id: str, answers: Sequence[str | None], scores: Sequence[float],
                        num_samples: int, spent: int = 0, worst_case: int = 0) -> DifficultyEstimate:
    """Summarize a probe: its answers (None: no answer) and their aggregated verifier scores.

    Args:
        answers: one per finished sample; None where a sample states no answer.
        scores: their aggregated verifier scores.
        num_samples: samples the probe drew, finished or not: a sample cut off before
            its answer counts against agreement.
        spent: FLOPs the probe cost.
        worst_case: FLOPs the probe's requests reserved before dispatch (what sizes phase 2).

    Raises:
        ValueError: if ``answers`` and ``scores`` differ in length.
    """
    if len(answers) != len(scores):
        raise ValueError(f"one score per answer needed, got {len(answers)} and {len(scores)}")
    winner, _ = majority_vote(answers)
    answered = [s for a, s in zip(answers, scores) if a is not None]
    majority = [s for a, s in zip(answers, scores) if a is not None and a == winner]
    agreement = len(majority) / max(num_samples, len(answers), 1)
    return DifficultyEstimate(problem_id, num_samples, agreement, max(majority, default=0.0),
                              max(answered, default=0.0), spent, worst_case)


@dataclass
class AllocationPolicy:
    """Thresholds, weights and strategy choices of the allocator (see the module docstring)."""

    easy_agreement: float = 0.7  # easy: the majority answer holds at least this share...
    easy_score: float = 0.7  # ...and scores at least this
    medium_score: float = 0.5  # medium: some answer scores at least this
    hopeless_score: float = 0.2  # hopeless: no answer scores this much
    weights: dict[str, float] = field(default_factory=lambda: {  # bin -> share of the pool
        "easy": 0.1, "medium": 1.0, "hard": 0.5, "hopeless": 0.0})
    strategies: dict[str, str] = field(default_factory=lambda: {  # bin -> phase-2 strategy
        "easy": "best_of_n", "medium": "beam", "hard": "dvts", "hopeless": STOP})
    sample_cost: dict[str, float] = field(default_factory=lambda: {  # strategy -> probe samples per sample
        "best_of_n": 1.0, "beam": 1.2, "dvts": 1.2})
    paced: tuple[str, ...] = ("beam",)  # phase-2 searches that narrow to their cap: sized by spend
    fixed_num_samples: int = 16  # phase-2 samples at weight 1 when no budget caps the job
    max_num_samples: int = 256  # phase-2 samples at most, whatever the grant

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("easy_agreement", "easy_score", "medium_score", "hopeless_score"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"search.{name} must be in [0, 1], got {value!r}")
        if not self.hopeless_score <= self.medium_score:
            raise ValueError(f"search.hopeless_score ({self.hopeless_score}) must be <= "
                             f"search.medium_score ({self.medium_score})")
        for table in (self.weights, self.strategies):
            if set(table) != set(BINS):
                raise ValueError(f"allocation tables need exactly the bins {', '.join(BINS)}; "
                                 f"got {sorted(table)}")
        if any(not w >= 0 for w in self.weights.values()):
            raise ValueError(f"bin weights must be >= 0, got {self.weights}")
        for name in ("fixed_num_samples", "max_num_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"search.{name} must be >= 0, got {getattr(self, name)!r}")

    def classify(self, estimate: DifficultyEstimate) -> str:
        """The difficulty bin of ``estimate``: easy | medium | hard | hopeless."""
        if estimate.best_score < self.hopeless_score or estimate.agreement == 0.0:
            return "hopeless"
        if estimate.agreement >= self.easy_agreement and estimate.majority_score >= self.easy_score:
            return "easy"
        return "medium" if estimate.best_score >= self.medium_score else "hard"


@dataclass(slots=True)
class Decision:
    """What phase 2 of one problem does."""

    problem_id: str
    bin: str
    strategy: str  # a registered strategy name, or "stop"
    num_samples: int  # phase-2 size in probe-sample equivalents (0 with "stop")
    grant: int | None  # FLOPs granted on top of what was spent; None when no budget applies


class Allocator:
    """Bins problems from their probes and splits the job's budget among them.

    Args:
        budget: the job's BudgetManager, or None (then the fixed rule decides).
        policy: thresholds and weights; defaults to ``AllocationPolicy()``.
        num_problems: problems the job will have in all, if known, so that early
            groups leave a share for problems not yet registered.
    """

    def __init__(self, budget: Any = None, policy: AllocationPolicy | None = None,
                 num_problems: int | None = None):
        self.budget = budget
        self.policy = policy or AllocationPolicy()
        self.policy.validate()
        self.num_problems = num_problems
        self.estimates: dict[str, DifficultyEstimate] = {}  # problem_id -> its probe's estimate
        self.decisions: dict[str, Decision] = {}  # problem_id -> its phase-2 decision
        self._waiting: dict[str, None] = {}  # problem_id -> None: registered, not yet reported
        self._running: dict[str, None] = {}  # problem_id -> None: decided, may still spend
        self._num_seen = 0  # problems ever registered

    def register(self, problem_id: str) -> None:
        """Announce a problem whose probe will report; allocation waits for it."""
        if problem_id not in self._waiting and problem_id not in self.estimates:
            self._waiting[problem_id] = None
            self._num_seen += 1

    def leave(self, problem_id: str) -> None:
        """A problem stopped: don't wait for its report, and its remaining grant is free again."""
        self._running.pop(problem_id, None)
        if problem_id not in self.decisions:  # it won't use a grant: keep it out of the split
            self.estimates.pop(problem_id, None)
        if problem_id in self._waiting:
            del self._waiting[problem_id]
            self._allocate_if_ready()

    def report(self, estimate: DifficultyEstimate) -> None:
        """Take one problem's probe result; allocates once its group is complete."""
        self._waiting.pop(estimate.problem_id, None)
        self.estimates[estimate.problem_id] = estimate
        if self._pool_is_none([estimate.problem_id]):
            self._decide_fixed(estimate.problem_id)  # nothing to share: no reason to wait
        self._allocate_if_ready()

    def decision(self, problem_id: str) -> Decision | None:
        """The problem's phase-2 decision, or None while its group still waits for reports."""
        return self.decisions.get(problem_id)

    # -- allocation -------------------------------------------------------------------

    def bin(self, problem_id: str) -> str:
        """The difficulty bin of a problem that reported (KeyError if it did not)."""
        return self.policy.classify(self.estimates[problem_id])

    def _allocate_if_ready(self) -> None:
        group = [pid for pid in self.estimates if pid not in self.decisions]
        if self._waiting or not group:
            return
        pool = self._pool(group)
        if pool is None:
            for pid in group:
                self._decide_fixed(pid)
            return
        weights = {pid: self.policy.weights[self.bin(pid)] for pid in group}
        total = sum(weights.values())
        for pid in group:
            grant = int(pool * weights[pid] / total) if total > 0 else 0
            self.budget.set_problem_cap(pid, self.budget.spent(pid) + self.budget.reserved(pid) + grant)
            self._decide(pid, self._size(pid, grant), grant)

    def _pool_is_none(self, group: list[str]) -> bool:
        budget = self.budget
        if budget is None or any(pid not in budget for pid in group):
            return True
        return budget.job_remaining is None and any(budget.remaining(pid) is None for pid in group)

    def _pool(self, group: list[str]) -> int | None:
        if self._pool_is_none(group):
            return None
        budget = self.budget
        if budget.job_remaining is None:
            return sum(budget.remaining(pid) for pid in group)
        promised = sum(max(budget.remaining(pid, count_reserved=True) or 0, 0)
                       for pid in self._running if budget.cap(pid) is not None)
        pool = max(budget.job_remaining - promised, 0)
        unseen = max((self.num_problems or 0) - self._num_seen, 0)
        return pool * len(group) // (len(group) + unseen)

    def _size(self, problem_id: str, grant: int) -> int:
        """Phase-2 samples that ``grant`` FLOPs buy at the probe's cost per sample."""
        estimate = self.estimates[problem_id]
        strategy = self.policy.strategies[self.bin(problem_id)]
        if strategy == STOP:
            return 0
        # Size by the probe's worst case, not by what it spent: a request must *fit* its
        # reservation under the cap, and what a probe spent depends on what the prefix
        # caches held (a rerun on warm caches spends half), while its reservations do not.
        # A search that paces itself (beam) narrows its levels when the cap runs short
        # instead of stopping, so it is sized by spend: sized by reservations it would
        # leave much of its grant unspent.
        if strategy in self.policy.paced:
            cost = estimate.spent or estimate.worst_case
        else:
            cost = estimate.worst_case or estimate.spent
        per_sample = cost / max(estimate.num_samples, 1)
        per_sample *= self.policy.sample_cost.get(strategy, 1.0)
        if per_sample <= 0:
            return self._fixed_size(problem_id)
        return min(self.policy.max_num_samples, int(grant // per_sample))

    def _fixed_size(self, problem_id: str) -> int:
        weight = self.policy.weights[self.bin(problem_id)]
        return min(self.policy.max_num_samples, round(self.policy.fixed_num_samples * weight))

    def _decide_fixed(self, problem_id: str) -> None:
        self._decide(problem_id, self._fixed_size(problem_id), None)

    def _decide(self, problem_id: str, num_samples: int, grant: int | None) -> None:
        difficulty = self.bin(problem_id)
        strategy = self.policy.strategies[difficulty] if num_samples > 0 else STOP
        self.decisions[problem_id] = Decision(problem_id, difficulty, strategy,
                                              num_samples if strategy != STOP else 0, grant)
        if strategy != STOP:
            self._running[problem_id] = None
