"""Missing backend packages are found on the driver before a job starts any work."""

import subprocess
import sys

import pytest

from ponder.actors import requirements
from ponder.actors.requirements import check_requirements, missing_packages
from ponder.config import load_config


def _pretend_missing(monkeypatch, *names):
    real = requirements.importlib.util.find_spec
    monkeypatch.setattr(requirements.importlib.util, "find_spec",
                        lambda name, *a: None if name in names else real(name, *a))


def test_hf_without_transformers_is_refused_with_the_install_command(monkeypatch):
    _pretend_missing(monkeypatch, "transformers")
    config = load_config(data={"generator": {"backend": "hf", "model_path": "/nowhere"},
                               "verifier": None, "search": {"strategy": "best_of_n",
                                                            "params": {"selection": "majority"}}})
    with pytest.raises(ImportError, match=r"generator.backend 'hf' needs transformers.*ponder\[hf\]"):
        check_requirements(config)


def test_installed_backends_pass_and_scripted_needs_nothing(monkeypatch):
    check_requirements(load_config())  # embedded: torch is installed here
    _pretend_missing(monkeypatch, "torch", "transformers", "vllm")
    config = load_config(data={"generator": {"backend": "scripted"}, "verifier": {"backend": "scripted"}})
    check_requirements(config)
    assert missing_packages(config.generator) == []


def test_solve_fails_in_one_line_before_any_work_without_vllm(tmp_path):
    if requirements.importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ponder", "solve", "--range", "900:901", "--out", str(out),
         "--set", "generator.backend=vllm", "--set", "generator.model_path=/nowhere"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs vllm" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing started: no run directory, no Ray
