"""Config loading: YAML, ``--set`` overrides, and one clear message for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from ponder.config import BACKENDS, Config, ConfigError, apply_override, load_config
from ponder.search import iter_strategies

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("game24*.yaml")) + [REPO / "configs" / "math500_vllm.yaml"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_are_a_valid_config():
    config = load_config()
    assert isinstance(config, Config)
    assert config.generator.backend == "embedded" and config.verifier.backend == "embedded"
    assert config.budget.flops_per_problem is None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.search.strategy in set(iter_strategies())


def test_yaml_values_and_exponent_numbers(tmp_path):
    path = write(tmp_path, """
search: {strategy: best_of_n, params: {n: 12, selection: majority}, seed: 7}
budget: {flops_per_problem: 2e12, flops_total: 1.5e14}
generator: {backend: scripted, num_replicas: 2, num_gpus: 0.5}
verifier: null
""")
    config = load_config(path)
    assert config.search.strategy == "best_of_n"
    assert config.search.params == {"n": 12, "selection": "majority"}
    assert config.budget.flops_per_problem == 2 * 10**12  # PyYAML reads "2e12" as a string
    assert config.budget.flops_total == 15 * 10**13
    assert config.generator.num_replicas == 2 and config.generator.num_gpus == 0.5
    assert config.verifier is None


def test_overrides_apply_last_with_yaml_scalars(tmp_path):
    path = write(tmp_path, "search: {strategy: beam, params: {beam_width: 2}}\nbudget: {flops_total: 100}\n")
    config = load_config(path, [
        "search.params.beam_width=8", "search.params.agg=min", "budget.flops_total=null",
        "generator.num_cpus=0.5", "ray.address=auto", "search.strategy=beam",
        "ray.runtime_env.env_vars.A=1"])
    assert config.search.params == {"beam_width": 8, "agg": "min"}
    assert config.budget.flops_total is None
    assert config.generator.num_cpus == 0.5
    assert config.ray.address == "auto"
    assert config.ray.runtime_env == {"env_vars": {"A": 1}}


@pytest.mark.parametrize("word, mode", [("off", "off"), ("on", "auto"), ("lines", "lines")])
def test_progress_words_that_yaml_reads_as_bools(word, mode):
    assert load_config(overrides=[f"output.progress={word}"]).output.progress == mode


def test_override_can_switch_strategy_and_its_params():
    config = load_config(overrides=["search.strategy=best_of_n", "search.params={n: 32}"])
    assert config.search.strategy == "best_of_n" and config.search.params == {"n": 32}


@pytest.mark.parametrize("item", ["search.strategy", "=3", "a..b=1", ""])
def test_malformed_override(item):
    with pytest.raises(ConfigError, match="--set expects key=value"):
        apply_override({}, item)


def expect_error(data: dict | None = None, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(data=data or {}, overrides=list(overrides))
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def test_unknown_strategy_lists_the_valid_ones():
    message = expect_error(overrides=("search.strategy=alphazero",))
    assert "search.strategy" in message and "'alphazero'" in message
    for name in iter_strategies():
        assert name in message


@pytest.mark.parametrize("role", ["generator", "verifier"])
def test_unknown_backend_lists_the_valid_ones(role):
    message = expect_error({role: {"backend": "tgi"}})
    assert f"{role}.backend" in message and "'tgi'" in message
    assert all(name in message for name in BACKENDS)


def test_plugin_backend_path_is_accepted():
    assert load_config(overrides=["generator.backend=my_pkg.backends:Gen"]).generator.backend == \
        "my_pkg.backends:Gen"


@pytest.mark.parametrize("field", ["flops_per_problem", "flops_total"])
@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_budget(field, value):
    message = expect_error({"budget": {field: value}})
    assert f"budget.{field}" in message and "positive" in message and str(value) in message


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_missing_model_path(backend):
    message = expect_error({"generator": {"backend": backend}})
    assert "generator.model_path" in message and backend in message


@pytest.mark.parametrize("data, where", [
    ({"searhc": {}}, "'searhc'"),
    ({"generator": {"replicas": 2}}, "'generator.replicas'"),
    ({"budget": {"flops": 1}}, "'budget.flops'"),
])
def test_unknown_keys_name_the_key_and_the_valid_ones(data, where):
    message = expect_error(data)
    assert where in message and "valid keys" in message


def test_unknown_search_param_lists_the_strategy_params():
    message = expect_error({"search": {"strategy": "beam", "params": {"beam_widht": 4}}})
    assert "beam_widht" in message and "beam_width" in message


def test_bad_search_param_value():
    assert "search.params" in expect_error({"search": {"strategy": "best_of_n", "params": {"n": 0}}})


@pytest.mark.parametrize("data, where", [
    ({"engine": {"max_batch_requests": "many"}}, "engine.max_batch_requests must be an integer"),
    ({"engine": {"max_batch_requests": 0}}, "engine.max_batch_requests must be positive"),
    ({"generator": {"num_replicas": 1.5}}, "generator.num_replicas must be an integer"),
    ({"generator": {"placement": "RANDOM"}}, "generator.placement: unknown value 'RANDOM'"),
    ({"ray": {"mode": "threads"}}, "ray.mode: unknown value 'threads'; valid: ray, inprocess"),
    ({"output": {"progress": "loud"}}, "output.progress: unknown value 'loud'"),
    ({"generator": 3}, "generator must be a mapping"),
    ({"search": {"params": [1, 2]}}, "search.params must be a mapping"),
])
def test_bad_values_name_the_field(data, where):
    assert where in expect_error(data)


def test_unknown_task_lists_the_valid_ones():
    message = expect_error({"task": {"name": "chess"}})
    assert "task.name" in message and "game24" in message and "countdown" in message


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="line 2 is not valid YAML"):
        load_config(write(tmp_path, "search: {}\n\tbudget: 1\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- beam\n"))


def test_variant_config_inherits_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "search: {strategy: beam, params: {beam_width: 3}}\nbudget: {flops_per_problem: 100}\n")
    variant = tmp_path / "variant.yaml"
    variant.write_text("base: base.yaml\nsearch: {strategy: best_of_n, params: {n: 8}}\n")
    config = load_config(variant)
    assert config.search.strategy == "best_of_n" and config.search.params == {"n": 8}
    assert config.budget.flops_per_problem == 100
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="a cycle"):
        load_config(tmp_path / "loop.yaml")


def test_to_dict_round_trips():
    config = load_config(overrides=["search.strategy=dvts", "budget.flops_total=1e13"])
    assert load_config(data=config.to_dict()) == config


# -- switching strategy from the command line ----------------------------------------------

GAME24 = REPO / "configs" / "game24.yaml"  # beam, with beam_width and expansion_factor


def test_a_strategy_switch_drops_the_old_strategys_params_with_a_notice(capsys):
    config = load_config(GAME24, ["search.strategy=best_of_n"])
    assert config.search.strategy == "best_of_n"
    assert "beam_width" not in config.search.params and "expansion_factor" not in config.search.params
    assert config.search.params["max_step_tokens"] == 48  # shared ones stay
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "beam_width, expansion_factor" in err and "beam" in err


def test_a_param_given_with_the_switch_is_still_checked():
    with pytest.raises(ConfigError, match=r"search.params: unknown search parameter\(s\) \['beam_width'\]"):
        load_config(GAME24, ["search.strategy=best_of_n", "search.params.beam_width=3"])
    config = load_config(GAME24, ["search.strategy=best_of_n", "search.params.n=3"])
    assert config.search.params["n"] == 3


def test_no_switch_no_drop(tmp_path, capsys):
    path = write(tmp_path, "search:\n  strategy: best_of_n\n  params: {beam_width: 4}\n")
    with pytest.raises(ConfigError, match="beam_width"):
        load_config(path)  # the YAML's own mistake is not a left-behind parameter
    with pytest.raises(ConfigError, match="beam_width"):
        load_config(path, ["search.strategy=best_of_n"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("strategy", sorted(iter_strategies()))
def test_every_strategy_runs_from_game24_yaml_by_its_name_alone(tmp_path, strategy):
    from conftest import scripted_job

    from ponder.engine.engine import run_inprocess
    from ponder.engine.rundir import read_results
    from ponder.search import get_strategy

    config = load_config(GAME24, [f"search.strategy={strategy}"])
    assert config.search.strategy == strategy
    get_strategy(strategy).Params.from_dict(config.search.params)
    config.output.progress = "off"
    task, problems, gen, ver = scripted_job(num_problems=2)
    summary = run_inprocess(config, problems, tmp_path, gen, ver, task=task)
    assert summary["num_problems"] == 2 and summary["strategy"] == strategy
    assert {line["id"] for line in read_results(tmp_path)} == {p.problem_id for p in problems}


def test_gguf_file_must_be_in_model_path(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    ok = load_config(data={"generator": {"backend": "hf", "model_path": str(tmp_path), "gguf_file": "model.gguf"}})
    assert ok.generator.gguf_file == "model.gguf" and ok.generator.chat_template == "auto"
    with pytest.raises(ConfigError, match=r"^generator\.gguf_file: no file 'other\.gguf' in model_path") as err:
        load_config(data={"generator": {"backend": "hf", "model_path": str(tmp_path), "gguf_file": "other.gguf"}})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^verifier\.gguf_file must name a \.gguf file"):
        load_config(data={"verifier": {"backend": "vllm", "model_path": str(tmp_path), "gguf_file": "model.bin"}})
    with pytest.raises(ConfigError, match=r"^generator\.gguf_file is for backends hf, vllm"):
        load_config(data={"generator": {"gguf_file": "model.gguf"}})


def test_chat_template_modes_and_files(tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    for value in ("auto", "none", str(template)):
        assert load_config(overrides=[f"generator.chat_template={value}"]).generator.chat_template == value
    with pytest.raises(ConfigError, match=r"^generator\.chat_template: unknown value 'chatml'; valid: auto, none"):
        load_config(overrides=["generator.chat_template=chatml"])
    with pytest.raises(ConfigError, match=r"^verifier\.chat_template must be 'auto'"):
        load_config(overrides=["verifier.chat_template=none"])


def test_backend_spec_carries_gguf_chat_template_and_task_prompts(tmp_path):
    from ponder.actors.factory import spec_from_config
    from ponder.tasks.base import Task

    class Chatty(Task):
        name = "chatty"

        def prompt(self, problem):
            return problem.problem

        def is_terminal(self, step):
            return True

        def extract_answer(self, steps):
            return None

        def system_prompt(self):
            return "Think step by step."

        def few_shot(self):
            return [("1+1?", "#### 2")]

    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages[0]['content'] }}")
    cfg = {"backend": "hf", "model_path": "/m", "gguf_file": "m.gguf", "chat_template": str(template)}
    spec = spec_from_config(cfg, Chatty())
    assert spec.kwargs == {"model_path": "/m", "gguf_file": "m.gguf", "chat_template": template.read_text(),
                           "system_prompt": "Think step by step.", "few_shot": [["1+1?", "#### 2"]]}
    assert spec_from_config({"backend": "embedded"}, Chatty()).kwargs == {}  # no chat format to give
    assert spec_from_config({"backend": "hf", "model_path": "/m"}).kwargs == {"model_path": "/m"}
