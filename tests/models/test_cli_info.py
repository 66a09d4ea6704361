"""``mmconcepts info``: in-process through ``mmconcepts.cli.main`` and as ``python -m mmconcepts``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmconcepts.cli import main


def run_module(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mmconcepts", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def assert_one_line_error(stderr: str):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])
def test_info_human(tiny_model_dirs, family, capsys):
    assert main(["info", "--model", str(tiny_model_dirs[family]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["family"].strip() == family
    assert lines["num_layers"].strip() == "3" and lines["hidden_size"].strip() == "64"
    assert lines["architecture"].strip().endswith("ForConditionalGeneration")
    assert int(lines["vocab_size"]) > 256 and lines["layers"].strip() == "0..2, -3..-1, norm"
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in out.splitlines()}
    assert len(starts) == 1  # values aligned


def test_info_json(tiny_llava_dir, capsys):
    assert main(["info", "--model", str(tiny_llava_dir), "--device", "cpu", "--model-dtype", "bfloat16", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "LlavaForConditionalGeneration" and info["dtype"] == "bfloat16"
    assert info["num_layers"] == 3 and info["final_norm"] == "model.language_model.norm"


@pytest.mark.parametrize("args, text", [
    (["--model", "does/not/exist"], "does not exist"),
    (["--model", "nobody-here/no-such-model"], "not in the Hugging Face cache"),
    (["--model-dtype", "int8"], "invalid choice: 'int8'"),
    (["--device", "tpu"], "unknown device"),
])
def test_info_bad_input(tiny_llava_dir, args, text, capsys):
    argv = ["info", "--model", str(tiny_llava_dir), "--device", "cpu"] + args
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert text in err


def test_info_unsupported_architecture(tmp_path, capsys):
    from transformers import LlamaConfig

    LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2, vocab_size=10,
                architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path)
    assert main(["info", "--model", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "unsupported architecture" in err


def test_module_help():
    result = run_module("--help")
    assert result.returncode == 0 and "info" in result.stdout
    result = run_module("info", "--help")
    assert result.returncode == 0 and "--model" in result.stdout and "--json" in result.stdout


@pytest.mark.slow
def test_module_info(tiny_qwen2_vl_dir):
    result = run_module("info", "--model", str(tiny_qwen2_vl_dir), "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["architecture"] == "Qwen2VLForConditionalGeneration" and info["hidden_size"] == 64


def test_module_bad_model(tmp_path):
    result = run_module("info", "--model", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "does not exist" in result.stderr
