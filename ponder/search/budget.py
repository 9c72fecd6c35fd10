"""The FLOP ledger: reservations before dispatch, settlements after, hard caps.

A request reserves the FLOPs it could cost at most before it is dispatched and
settles to what it did cost when its result arrives, so ``spent + reserved``
never passes a cap, however many requests are in flight. What a request costs is
priced in ``ponder.search.flops``; this module only keeps the accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODELS: tuple[str, ...] = ("generator", "verifier")


class BudgetError(RuntimeError):
    """A settlement that would break the ledger (more spent than reserved, a stale reservation)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """FLOPs set aside for one request until it settles or is released."""

    reservation_id: int
    problem_id: str
    flops: int
    model: str  # "generator" | "verifier"


class _Ledger:
    """Spent and reserved FLOPs against one cap (a problem's or the job's)."""

    __slots__ = ("cap", "spent", "reserved", "reserved_ever", "spent_by_model")

    def __init__(self, cap: int | None):
        self.cap = cap  # None = unlimited
        self.spent = 0
        self.reserved = 0
        self.reserved_ever = 0  # every reservation made through this ledger, summed (not checkpointed)
        self.spent_by_model = dict.fromkeys(MODELS, 0)  # model -> FLOPs spent

    def fits(self, amount: int) -> bool:
        return self.cap is None or self.spent + self.reserved + amount <= self.cap

    def headroom(self, count_reserved: bool) -> int | None:
        if self.cap is None:
            return None
        return self.cap - self.spent - (self.reserved if count_reserved else 0)

    def check(self, name: str) -> None:
        assert self.spent >= 0 and self.reserved >= 0, f"{name}: negative ledger {self.spent}, {self.reserved}"
        assert self.cap is None or self.spent + self.reserved <= self.cap, (
            f"{name}: spent {self.spent} + reserved {self.reserved} > cap {self.cap}")


def _min_headroom(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _check_amount(what: str, value: Any, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # caps from YAML/CLI often arrive as 1e15
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        valid = "an int >= 0" + (" or None (unlimited)" if allow_none else "")
        raise ValueError(f"{what} must be {valid}, got {value!r}")
    return value


class BudgetManager:
    """FLOP caps per problem and per job, with reservations for requests in flight.

    Every operation keeps, for each problem and for the job: ``spent >= 0``,
    ``reserved >= 0`` and ``spent + reserved <= cap``.

    Args:
        flops_total: cap on the whole job; None = unlimited.
        flops_per_problem: default cap of each problem; None = unlimited.

    Raises:
        ValueError: if a cap is not an int >= 0 or None.
    """

    def __init__(self, flops_total: int | None = None, flops_per_problem: int | None = None):
        self.flops_total = _check_amount("flops_total", flops_total, allow_none=True)
        self.flops_per_problem = _check_amount("flops_per_problem", flops_per_problem, allow_none=True)
        self._job = _Ledger(self.flops_total)
        self._problems: dict[str, _Ledger] = {}  # problem_id -> its ledger
        self._open: dict[int, Reservation] = {}  # reservation_id -> open reservation
        self._next_reservation_id = 0

    # -- problems -------------------------------------------------------------

    def add_problem(self, problem_id: str, cap: int | None = None) -> None:
        """Register a problem with ``cap`` FLOPs, or the default ``flops_per_problem`` if None.

        Raises:
            ValueError: if the problem is already registered or the cap is invalid.
        """
        if problem_id in self._problems:
            raise ValueError(f"problem {problem_id!r} is already in the budget")
        cap = self.flops_per_problem if cap is None else _check_amount("cap", cap, allow_none=False)
        self._problems[problem_id] = _Ledger(cap)

    def __contains__(self, problem_id: str) -> bool:
        return problem_id in self._problems

    def set_problem_cap(self, problem_id: str, cap: int | None) -> int | None:
        """Move a problem's cap (the compute-optimal allocator's lever); None = unlimited.

        A cap below what the problem already spent and reserved is clamped up to that
        sum, so taking budget away only freezes a problem, never breaks the ledger.

        Returns:
            The cap now in force.

        Raises:
            KeyError: unknown problem. ValueError: invalid cap.
        """
        ledger = self._ledger(problem_id)
        cap = _check_amount("cap", cap, allow_none=True)
        ledger.cap = None if cap is None else max(cap, ledger.spent + ledger.reserved)
        ledger.check(problem_id)
        return ledger.cap

    def _ledger(self, problem_id: str) -> _Ledger:
        try:
            return self._problems[problem_id]
        except KeyError:
            raise KeyError(f"problem {problem_id!r} is not in the budget; call add_problem first") from None

    # -- reservations ---------------------------------------------------------

    def reserve(self, problem_id: str, flops: int, model: str = "generator") -> Reservation | None:
        """Set ``flops`` aside for one request of ``problem_id``.

        Returns:
            The reservation, or None if it would push ``spent + reserved`` over the
            problem's cap or the job's cap (nothing is changed then).

        Raises:
            KeyError: unknown problem. ValueError: negative ``flops`` or unknown ``model``.
        """
        ledger = self._ledger(problem_id)
        if type(flops) is not int or flops < 0:  # the hot path skips the full check
            flops = _check_amount("flops", flops, allow_none=False)
        if model not in ledger.spent_by_model:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
        if not (ledger.fits(flops) and self._job.fits(flops)):
            return None
        reservation = Reservation(self._next_reservation_id, problem_id, flops, model)
        self._next_reservation_id += 1
        self._open[reservation.reservation_id] = reservation
        ledger.reserved += flops
        ledger.reserved_ever += flops
        self._job.reserved += flops
        return reservation

    def settle(self, reservation: Reservation, actual: int) -> None:
        """Close ``reservation`` having spent ``actual`` FLOPs (its unused rest is freed).

        Raises:
            BudgetError: if the reservation is not open, or ``actual`` exceeds it
                (the backend broke its token bound); the ledger is unchanged then.
            ValueError: negative ``actual``.
        """
        if type(actual) is not int or actual < 0:
            actual = _check_amount("actual", actual, allow_none=False)
        self._check_open(reservation)
        if actual > reservation.flops:
            raise BudgetError(
                f"problem {reservation.problem_id!r}: {reservation.model} spent {actual} FLOPs "
                f"but reserved only {reservation.flops}; its backend reported more tokens than "
                f"the token bound allows (give the scheduler a larger token_bound)")
        del self._open[reservation.reservation_id]
        for ledger in (self._problems[reservation.problem_id], self._job):
            ledger.reserved -= reservation.flops
            ledger.spent += actual
            ledger.spent_by_model[reservation.model] += actual
        self._problems[reservation.problem_id].check(reservation.problem_id)
        self._job.check("job")

    def release(self, reservation: Reservation) -> None:
        """Cancel ``reservation`` with nothing spent (cancellation, failed dispatch).

        Raises:
            BudgetError: if the reservation is not open.
        """
        self._check_open(reservation)
        del self._open[reservation.reservation_id]
        for ledger in (self._problems[reservation.problem_id], self._job):
            ledger.reserved -= reservation.flops
            ledger.check(reservation.problem_id)

    def _check_open(self, reservation: Reservation) -> None:
        found = self._open.get(reservation.reservation_id)
        if found is not reservation and found != reservation:
            raise BudgetError(f"reservation {reservation.reservation_id} of problem "
                              f"{reservation.problem_id!r} is not open (already settled or released)")

    # -- queries --------------------------------------------------------------

    def cap(self, problem_id: str) -> int | None:
        """The problem's cap now (None = unlimited). Raises KeyError if unknown."""
        return self._ledger(problem_id).cap

    def spent(self, problem_id: str) -> int:
        """FLOPs the problem's settled requests cost. Raises KeyError if unknown."""
        return self._ledger(problem_id).spent

    def reserved_ever(self, problem_id: str) -> int:
        """The worst cases of every request ``problem_id`` reserved for since this manager was built.

        Unlike ``spent``, it does not depend on what a prefix cache happened to hold, so
        it says what the same requests need to *fit* under a cap another time.
        """
        return self._ledger(problem_id).reserved_ever

    def reserved(self, problem_id: str) -> int:
        """FLOPs held by the problem's open reservations. Raises KeyError if unknown."""
        return self._ledger(problem_id).reserved

    def remaining(self, problem_id: str, count_reserved: bool = True) -> int | None:
        """FLOPs ``problem_id`` can still reserve: the tighter of its cap and the job's.

        Args:
            count_reserved: if False, as if every open reservation settled at zero
                (the most the problem could ever get without a cap change).

        Returns:
            The headroom, or None if neither cap limits it.
        """
        return _min_headroom(self._ledger(problem_id).headroom(count_reserved),
                             self._job.headroom(count_reserved))

    @property
    def job_spent(self) -> int:
        """FLOPs spent by all problems."""
        return self._job.spent

    @property
    def job_reserved(self) -> int:
        """FLOPs held by all open reservations."""
        return self._job.reserved

    @property
    def job_remaining(self) -> int | None:
        """FLOPs the job can still reserve; None if unlimited."""
        return self._job.headroom(count_reserved=True)

    def spent_by_model(self, problem_id: str | None = None) -> dict[str, int]:
        """``{"generator": ..., "verifier": ...}`` spent by the job, or by one problem."""
        ledger = self._job if problem_id is None else self._ledger(problem_id)
        return dict(ledger.spent_by_model)

    @property
    def num_open_reservations(self) -> int:
        """Reservations neither settled nor released."""
        return len(self._open)

    @property
    def problem_ids(self) -> list[str]:
        """Registered problems, in the order they were added."""
        return list(self._problems)

    # -- checkpoints ----------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The ledger as plain dicts, lists, strs and ints (msgpack-able below 2**64 FLOPs)."""
        return {
            "flops_total": self.flops_total,
            "flops_per_problem": self.flops_per_problem,
            "next_reservation_id": self._next_reservation_id,
            "problems": {pid: {"cap": led.cap, "spent_by_model": dict(led.spent_by_model)}
                         for pid, led in self._problems.items()},
            "open_reservations": [[r.reservation_id, r.problem_id, r.flops, r.model]
                                  for r in self._open.values()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "BudgetManager":
        """Rebuild a manager from ``to_state()``; spent and reserved are recomputed from it.

        Open reservations come back open: a resuming engine releases those whose
        requests it will not see answered.
        """
        manager = cls(state["flops_total"], state["flops_per_problem"])
        for pid, entry in state["problems"].items():
            ledger = _Ledger(entry["cap"])
            for model, amount in entry["spent_by_model"].items():
                ledger.spent_by_model[model] = amount
                ledger.spent += amount
            manager._problems[pid] = ledger
            manager._job.spent += ledger.spent
            for model in MODELS:
                manager._job.spent_by_model[model] += ledger.spent_by_model[model]
        for rid, pid, amount, model in state["open_reservations"]:
            manager._open[rid] = Reservation(rid, pid, amount, model)
            manager._problems[pid].reserved += amount
            manager._job.reserved += amount
        manager._next_reservation_id = state["next_reservation_id"]
        for pid, ledger in manager._problems.items():
            ledger.check(pid)
        manager._job.check("job")
        return manager
