"""A msgpack codec for search state: plain data plus objects of an allowlist of classes.

Checkpoints must hold trees and strategies mid-search, which are graphs of small
objects that refer to each other (a ``LevelSearch`` points back at its strategy,
every strategy of a job shares one ``JobContext``). Pickle would do that, but
loading a pickle runs whatever it names; this codec only ever rebuilds classes
on its allowlist, looked up by name in a dict, never imported.

Encoding rules (msgpack ext types, so no user dict can be mistaken for a tag):

- ``None``, bool, int, float, str, bytes, list and dict are msgpack's own;
  tuple, set, frozenset, ints beyond 64 bits, ``enum`` members and
  ``random.Random`` (its ``getstate()``) get an ext type each.
- An object of an allowlisted class becomes ``(class path, ref id, fields)``,
  its fields being every ``__slots__`` entry along its MRO plus its ``__dict__``.
  An object met again becomes a reference to its ref id, so shared objects
  stay shared and cycles close. Plain containers are values: two attributes
  holding the same list decode to two equal lists.
- An *external* is an object the caller names instead of encoding: the task,
  the job's BudgetManager (checkpointed with its own ``to_state``), the request
  id callable. ``encode`` writes its name; ``decode`` puts back whatever object
  the caller passes under that name (a missing one is an error).

Decoding rebuilds an object with ``cls.__new__`` and sets its fields directly,
with no ``__init__`` call, so restoring a strategy does not re-run its start-up.
"""

from __future__ import annotations

import enum
import random
from typing import Any, Iterable, Mapping

import msgpack

OBJECT, REF, TUPLE, ENUM, SET, FROZENSET, RANDOM, EXTERNAL, BIGINT = range(1, 10)  # ext type codes
_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack stores natively
_UNSET = object()


class CodecError(ValueError):
    """Data the codec refuses: an unknown class, a missing external, malformed bytes."""


_ALLOWED: dict[str, type] = {}  # "module:QualName" -> class that may be encoded and decoded
_builtins_allowed = False


def class_path(cls: type) -> str:
    """The name a class is stored under: ``"module:QualName"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def allow(*classes: type) -> None:
    """Put ``classes`` on the allowlist (plugin strategies, their helper objects).

    Only classes: an allowlisted class is rebuilt with ``__new__`` and its fields set,
    so it should be a plain data holder whose state is its attributes.
    """
    for cls in classes:
        if not isinstance(cls, type):
            raise TypeError(f"allow() takes classes, got {cls!r}")
        _ALLOWED[class_path(cls)] = cls


def allowed_classes() -> dict[str, type]:
    """The allowlist now: the built-in search classes, every registered strategy and
    its ``Params``, and whatever ``allow`` added."""
    _allow_builtins()
    from ponder.search.strategies.base import STRATEGIES

    for cls in STRATEGIES.values():
        if class_path(cls) not in _ALLOWED:
            allow(cls, cls.Params)
    return _ALLOWED


def _allow_builtins() -> None:
    global _builtins_allowed
    if _builtins_allowed:
        return
    from ponder.search import allocate, messages, scheduler, tree
    from ponder.search.flops import ModelSpec, SlackTokenBound, StepCosts
    from ponder.search.strategies import base, beam, levels, rebase, rollout

    allow(tree.Tree, tree.Node, tree.NodeStatus,
          messages.GenerateRequest, messages.GenerateResult, messages.ScoreRequest,
          messages.ScoreResult, base.Answer, base.JobContext, base.StrategyParams,
          levels.LevelSearch, beam.KeepTop, rebase.Balance, rollout.Rollouts,
          allocate.Allocator, allocate.AllocationPolicy, allocate.DifficultyEstimate,
          allocate.Decision, scheduler.ProblemStats, ModelSpec, StepCosts, SlackTokenBound)
    _builtins_allowed = True


# -- encoding ---------------------------------------------------------------------------

_FIELD_NAMES: dict[type, tuple[tuple[str, ...], bool]] = {}  # class -> (slot names, has __dict__)


def _field_names(cls: type) -> tuple[tuple[str, ...], bool]:
    """Every slot along the MRO (private ones name-mangled), and whether instances have a __dict__."""
    cached = _FIELD_NAMES.get(cls)
    if cached is None:
        names = []
        for klass in cls.__mro__:
            slots = klass.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name in ("__dict__", "__weakref__"):
                    continue
                if name.startswith("__") and not name.endswith("__"):
                    name = f"_{klass.__name__.lstrip('_')}{name}"  # name-mangled private slot
                names.append(name)
        has_dict = any("__dict__" in klass.__dict__ for klass in cls.__mro__ if klass is not object)
        cached = _FIELD_NAMES[cls] = (tuple(names), has_dict)
    return cached


def _fields(obj: Any) -> dict[str, Any]:
    """Every slot along the MRO that is set, then ``__dict__``."""
    names, has_dict = _field_names(type(obj))
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(obj, name, _UNSET)
        if value is not _UNSET:
            out[name] = value
    if has_dict:
        out.update(obj.__dict__)
    return out


class _Encoder:
    def __init__(self, externals: Mapping[str, Any]):
        self.allowed = allowed_classes()
        self.externals = dict(externals)
        self.external_ids = {id(v): k for k, v in self.externals.items()}  # id(object) -> name
        self.refs: dict[int, int] = {}  # id(object) -> ref id
        self.enums: dict[Any, msgpack.ExtType] = {}  # enum member -> its encoding
        self.keep: list[Any] = []  # keeps encoded objects alive so their ids stay unique

    def pack(self, obj: Any) -> bytes:
        return msgpack.packb(obj, default=self.default, use_bin_type=True, strict_types=True)

    def default(self, obj: Any) -> msgpack.ExtType:
        cls = type(obj)
        name = self.external_ids.get(id(obj))
        if name is not None:
            return msgpack.ExtType(EXTERNAL, self.pack(name))
        if cls is tuple:
            return msgpack.ExtType(TUPLE, self.pack(list(obj)))
        if isinstance(obj, enum.Enum):
            ext = self.enums.get(obj)
            if ext is None:  # a tree has thousands of nodes and a handful of statuses
                ext = self.enums[obj] = msgpack.ExtType(ENUM, self.pack([class_path(cls), obj.value]))
            return ext
        if cls is int:  # only ints outside msgpack's range get here
            return msgpack.ExtType(BIGINT, str(obj).encode())
        if isinstance(obj, (int, float)) and not isinstance(obj, bool):
            return (int if isinstance(obj, int) else float)(obj)  # e.g. numpy.float64
        if cls.__module__ == "numpy" and hasattr(obj, "item"):
            return obj.item()  # numpy scalars from a backend's scores
        if cls in (set, frozenset):
            code = SET if cls is set else FROZENSET
            return msgpack.ExtType(code, self.pack(_sorted_if_possible(obj)))
        if cls is random.Random:
            version, state, gauss = obj.getstate()
            return msgpack.ExtType(RANDOM, self.pack([version, list(state), gauss]))
        path = class_path(cls)
        if self.allowed.get(path) is cls:
            return self._object(obj, path)
        name = self._equal_external(obj)
        if name is not None:
            return msgpack.ExtType(EXTERNAL, self.pack(name))
        raise CodecError(f"cannot encode a {path} object: its class is not on the codec's "
                         f"allowlist (add it with ponder.search.codec.allow) and it is no "
                         f"external (externals: {sorted(self.externals) or 'none'})")

    def _object(self, obj: Any, path: str) -> msgpack.ExtType:
        ref = self.refs.get(id(obj))
        if ref is not None:
            return msgpack.ExtType(REF, self.pack(ref))
        ref = self.refs[id(obj)] = len(self.refs)
        self.keep.append(obj)
        # The ref id is fixed before the fields are packed, so fields may point back here.
        header = msgpack.packb(path) + msgpack.packb(ref)
        return msgpack.ExtType(OBJECT, header + self.pack(_fields(obj)))

    def _equal_external(self, obj: Any) -> str | None:
        # Bound methods are new objects on each attribute access: match them by equality.
        for name, value in self.externals.items():
            try:
                if callable(obj) and obj == value:
                    return name
            except Exception:  # noqa: BLE001 -- an odd __eq__ just means "not this one"
                continue
        return None


def _sorted_if_possible(items: Iterable[Any]) -> list[Any]:
    items = list(items)
    try:
        return sorted(items)  # stable bytes for equal sets
    except TypeError:
        return items


def encode(obj: Any, externals: Mapping[str, Any] | None = None) -> bytes:
    """``obj`` as msgpack bytes.

    Args:
        obj: plain data, allowlisted objects, or containers of them.
        externals: name -> object to store by name rather than encode.

    Raises:
        CodecError: an object whose class is not allowlisted and that is no external.
    """
    return _Encoder(externals or {}).pack(obj)


# -- decoding ---------------------------------------------------------------------------

class _Decoder:
    def __init__(self, externals: Mapping[str, Any]):
        self.allowed = allowed_classes()
        self.externals = externals
        self.objects: dict[int, Any] = {}  # ref id -> rebuilt object

    def unpacker(self, data: bytes) -> msgpack.Unpacker:
        unpacker = msgpack.Unpacker(ext_hook=self.ext_hook, raw=False, strict_map_key=False,
                                    max_buffer_size=max(len(data), 1))
        unpacker.feed(data)
        return unpacker

    def unpack(self, data: bytes) -> Any:
        unpacker = self.unpacker(data)
        value = next(unpacker)
        if unpacker.tell() != len(data):
            raise CodecError(f"{len(data) - unpacker.tell()} stray bytes after the encoded value")
        return value

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == OBJECT:
            return self._object(data)
        if code == REF:
            ref = self.unpack(data)
            if ref not in self.objects:
                raise CodecError(f"reference to object {ref}, which was never defined")
            return self.objects[ref]
        if code == TUPLE:
            return tuple(self.unpack(data))
        if code in (SET, FROZENSET):
            return (set if code == SET else frozenset)(self.unpack(data))
        if code == ENUM:
            path, value = self.unpack(data)
            return self._class(path)(value)
        if code == BIGINT:
            return int(data.decode())
        if code == RANDOM:
            version, state, gauss = self.unpack(data)
            rng = random.Random()
            rng.setstate((version, tuple(state), gauss))
            return rng
        if code == EXTERNAL:
            name = self.unpack(data)
            if name not in self.externals:
                raise CodecError(f"the data needs external {name!r}, which the caller did not "
                                 f"pass (given: {sorted(self.externals) or 'none'})")
            return self.externals[name]
        raise CodecError(f"unknown ext type {code} in encoded data")

    def _class(self, path: Any) -> type:
        cls = self.allowed.get(path) if isinstance(path, str) else None
        if cls is None:
            raise CodecError(f"refusing to decode class {path!r}: not on the codec's allowlist")
        return cls

    def _object(self, data: bytes) -> Any:
        unpacker = self.unpacker(data)
        cls = self._class(next(unpacker))
        ref = next(unpacker)
        obj = cls.__new__(cls)
        self.objects[ref] = obj  # before the fields: they may refer back to it
        fields = next(unpacker)
        if not isinstance(fields, dict):
            raise CodecError(f"fields of a {class_path(cls)} object are not a map")
        for name, value in fields.items():
            object.__setattr__(obj, name, value)  # frozen dataclasses too
        return obj


def decode(data: bytes, externals: Mapping[str, Any] | None = None) -> Any:
    """The value ``encode`` turned into ``data``.

    Args:
        data: bytes from ``encode``.
        externals: name -> object for every external the data names.

    Raises:
        CodecError: malformed data, a class not on the allowlist, a missing external.
    """
    try:
        return _Decoder(externals or {}).unpack(data)
    except CodecError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, StopIteration,
            msgpack.UnpackException) as e:
        raise CodecError(f"malformed encoded data: {type(e).__name__}: {e}") from None
