"""Job checkpoints: every tree, every strategy's state and the FLOP ledger, in one msgpack file.

File format: a 24-byte header (magic ``PONDERCK``, format version, payload length,
CRC-32 of the payload) and a payload from ``ponder.search.codec``. Never pickle:
loading a checkpoint rebuilds only allowlisted ponder classes. A file is written
to a temporary name in the same directory, fsync'd and renamed over the old one,
so a crash leaves the previous checkpoint or the new one, never half of either.

What resuming means (``load_job``):

- Finished problems stay finished: the checkpoint lists their result records,
  and ``results.jsonl`` lines written after the last checkpoint are taken too,
  their FLOPs put back into the ledger from the line (a line is written only
  once its problem's ledger is final, so nothing is counted twice).
- The ledger comes back without its open reservations: requests in flight at
  the crash never returned a result, so their FLOPs were never spent.
- Those requests are asked again. Every strategy runs inside a
  ``TrackedStrategy`` that remembers the requests it handed out and has not had
  answered (queued in the scheduler or dispatched); a restored one hands them
  out again first, with their old ids, so the strategy gets the results it was
  waiting for and goes on exactly as if nothing had happened.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ponder.search import codec
from ponder.search.budget import BudgetManager
from ponder.search.messages import Request, Result
from ponder.search.strategies.base import Answer, JobContext, Strategy

MAGIC = b"PONDERCK"
VERSION = 1
_HEADER = struct.Struct("<8sHHQI")  # magic, version, reserved, payload bytes, crc32 of payload


class PonderCheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupted, or of another version.

    ``path`` is the file; the message names it and what is wrong.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        super().__init__(f"checkpoint {self.path}: {reason}")


# -- the file ----------------------------------------------------------------------------

def write_checkpoint(path: str | os.PathLike, payload: bytes) -> None:
    """Atomically replace ``path`` with a checkpoint holding ``payload``.

    Raises:
        OSError: the directory cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    header = _HEADER.pack(MAGIC, VERSION, 0, len(payload), zlib.crc32(payload))
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)  # the rename itself must survive a power loss


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike) -> bytes:
    """The payload of the checkpoint at ``path``, checked against its header.

    Raises:
        PonderCheckpointError: missing, not a checkpoint, another version, truncated or corrupted.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PonderCheckpointError(path, "no such file (nothing to resume from)") from None
    except OSError as e:
        raise PonderCheckpointError(path, f"cannot read it: {e.strerror or e}") from None
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        raise PonderCheckpointError(path, "not a ponder checkpoint (bad magic bytes)")
    _, version, _, length, crc = _HEADER.unpack_from(data)
    if version != VERSION:
        raise PonderCheckpointError(path, f"format version {version}, but this ponder reads "
                                          f"version {VERSION}; resume it with the ponder that wrote it")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise PonderCheckpointError(path, f"truncated: {len(payload)} of {length} payload bytes")
    if zlib.crc32(payload) != crc:
        raise PonderCheckpointError(path, "corrupted: the payload does not match its checksum")
    return payload


# -- request ids and tracked strategies ------------------------------------------------

class RequestIds:
    """Hands out request ids unique within a job; its position is saved in checkpoints.

    Args:
        start: the first id to hand out.
    """

    def __init__(self, start: int = 0):
        self.next_id = start

    def __call__(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def advance_to(self, next_id: int) -> None:
        """Never hand out an id below ``next_id`` (one a restored strategy may still wait on)."""
        self.next_id = max(self.next_id, next_id)


class TrackedStrategy(Strategy):
    """Wraps a strategy and remembers its requests that have had no result yet.

    To the scheduler it is the strategy itself. After a restore, ``resume()`` makes
    it hand every unanswered request out again, first and in their original order.

    Args:
        inner: the strategy doing the search.
    """

    name = "tracked"

    def __init__(self, inner: Strategy):  # noqa -- no Strategy.__init__: every field is inner's
        self.inner = inner
        self.outstanding: dict[int, Request] = {}  # request_id -> request handed out, unanswered
        self.replay: list[Request] = []  # unanswered requests to hand out again after a restore

    tree = property(lambda self: self.inner.tree)
    task = property(lambda self: self.inner.task)
    params = property(lambda self: self.inner.params)
    context = property(lambda self: self.inner.context)
    stop_reason = property(lambda self: self.inner.stop_reason)

    def requests(self) -> list[Request]:
        out, self.replay = self.replay, []
        if not self.inner.done:
            out += self.inner.requests()
        for request in out:
            self.outstanding[request.request_id] = request
        return out

    def on_result(self, request: Request, result: Result) -> None:
        self.outstanding.pop(request.request_id, None)
        self.inner.on_result(request, result)

    def answer(self) -> Answer:
        return self.inner.answer()

    def stop(self, reason: str) -> None:
        self.inner.stop(reason)

    def resume(self) -> None:
        """Hand out every unanswered request again on the next ``requests()``."""
        self.replay = list(self.outstanding.values())


codec.allow(TrackedStrategy)


# -- a job's state -----------------------------------------------------------------------

@dataclass
class JobState:
    """Everything a job needs to go on after a crash.

    ``strategies`` are the active problems' TrackedStrategies; ``finished`` maps a
    finished problem's id to its results.jsonl record; ``stats`` maps an active
    problem's id to the scheduler's ProblemStats counters (as a dict) so far.
    """

    problem_ids: list[str]  # every problem of the job, in order
    budget: BudgetManager
    request_ids: RequestIds
    context: JobContext
    strategies: list[TrackedStrategy] = field(default_factory=list)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # what produced it: strategy, config, ...


def save_job(path: str | os.PathLike, state: JobState, task: Any) -> int:
    """Write ``state`` as a checkpoint at ``path``; returns its size in bytes.

    The task, the ledger and the request-id counter are stored by name or as
    plain data, not as objects: ``load_job`` re-attaches them.

    Raises:
        CodecError: a strategy holds an object the codec does not know.
    """
    externals = {"task": task, "budget": state.budget, "next_request_id": state.request_ids}
    graph = codec.encode({"strategies": state.strategies, "context": state.context}, externals)
    payload = codec.encode({
        "problem_ids": state.problem_ids, "finished": state.finished, "stats": state.stats,
        "budget": state.budget.to_state(), "next_request_id": state.request_ids.next_id,
        "meta": state.meta, "saved_at": time.time(), "graph": graph,
    })
    write_checkpoint(path, payload)
    return len(payload) + _HEADER.size


def ledger_with_finished(state: dict[str, Any], finished: dict[str, dict[str, Any]]) -> BudgetManager:
    """The FLOP ledger ``state`` (``BudgetManager.to_state()``) in which every finished problem
    has spent what its results line says: how a resumed job gets its spending back.

    A line is written only once its problem's ledger is final, so nothing is counted
    twice. A problem the ledger does not know yet gets the cap its line records.
    """
    problems = {pid: dict(entry) for pid, entry in state["problems"].items()}  # problem_id -> entry
    for pid, record in finished.items():
        spent = dict(record.get("flops_by_model") or {})
        if pid not in problems:
            problems[pid] = {"cap": record.get("budget_flops", state["flops_per_problem"]),
                             "spent_by_model": spent}
        elif spent:
            problems[pid]["spent_by_model"] = spent
    return BudgetManager.from_state({**state, "problems": problems})


def load_job(path: str | os.PathLike, task: Any, finished: dict[str, dict[str, Any]] | None = None,
             request_ids: RequestIds | None = None) -> JobState:
    """Restore a job from the checkpoint at ``path``, ready to go on (see the module docstring).

    Args:
        task: the job's task object, re-attached to every strategy.
        finished: problem_id -> results record of problems finished after the
            checkpoint (``RunDir.read_finished``); they are not searched again.
        request_ids: the counter strategies will draw ids from; advanced past every
            id the checkpoint handed out. Default: a new one.

    Raises:
        PonderCheckpointError: the file is unusable.
    """
    try:
        outer = codec.decode(read_checkpoint(path))
        state = dict(outer["budget"])
        done = {**outer["finished"], **(finished or {})}
        state["open_reservations"] = []  # their results never came back: nothing was spent
        budget = ledger_with_finished(state, done)
        request_ids = request_ids or RequestIds()
        request_ids.advance_to(outer["next_request_id"])
        graph = codec.decode(outer["graph"], {"task": task, "budget": budget,
                                              "next_request_id": request_ids})
    except PonderCheckpointError:
        raise
    except (codec.CodecError, KeyError, TypeError, ValueError, AssertionError) as e:
        raise PonderCheckpointError(path, f"unreadable content ({type(e).__name__}: {e})") from None
    active = []
    for strategy in graph["strategies"]:
        if strategy.problem_id in done:
            strategy.stop("done")  # finished after the checkpoint; lets shared allocators know
        else:
            strategy.resume()
            active.append(strategy)
    stats = {pid: s for pid, s in outer["stats"].items() if pid not in done}
    return JobState(list(outer["problem_ids"]), budget, request_ids, graph["context"], active,
                    done, stats, dict(outer["meta"]))


class Cadence:
    """When to checkpoint: every ``every_s`` seconds or every ``every_updates`` engine updates.

    Args:
        every_s: seconds between checkpoints; 0 = no time trigger.
        every_updates: scheduler updates between checkpoints; 0 = no count trigger.
        clock: time source (tests pass a fake).
    """

    def __init__(self, every_s: float = 30.0, every_updates: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        if every_s < 0 or every_updates < 0:
            raise ValueError(f"checkpoint cadence must be >= 0, got every_s={every_s}, "
                             f"every_updates={every_updates}")
        self.every_s = every_s
        self.every_updates = every_updates
        self.clock = clock
        self.last = clock()
        self.num_updates = 0

    def tick(self, num_updates: int = 1) -> bool:
        """Count ``num_updates`` updates; True if a checkpoint is due now (then the clock restarts)."""
        self.num_updates += num_updates
        due = ((self.every_updates and self.num_updates >= self.every_updates)
               or (self.every_s and self.clock() - self.last >= self.every_s))
        if due:
            self.last = self.clock()
            self.num_updates = 0
        return bool(due)


def tracked(strategies: Iterable[Strategy]) -> list[TrackedStrategy]:
    """Wrap each strategy (an already tracked one is kept as it is)."""
    return [s if isinstance(s, TrackedStrategy) else TrackedStrategy(s) for s in strategies]


def add_stats(saved: dict[str, int] | None, new: dict[str, int]) -> dict[str, int]:
    """Counters of a resumed problem: those saved before the crash plus those since."""
    if not saved:
        return dict(new)
    return {key: saved.get(key, 0) + new.get(key, 0) for key in {**saved, **new}}
