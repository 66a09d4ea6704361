"""Kill an extraction with SIGKILL mid-run, resume it, and get exactly the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from mmconcepts.extract import load_captions, load_features, read_manifest
from tests.fixtures.datasets import write_images_dataset


def _command(model_dir, data, word, out, *extra):
    return [sys.executable, "-m", "mmconcepts", "extract", "--model", str(model_dir), "--data", str(data),
            "--token", word, "--keep", "generated", "--layers", "0,norm", "--batch-size", "2", "--shard-size", "2",
            "--max-new-tokens", "24", "--min-new-tokens", "24", "--dtype", "float32", "--out", str(out),
            "--quiet", *extra]


def test_sigkill_then_resume_equals_uninterrupted(tiny_model_dirs, tiny_adapters, tmp_path):
    import re
    from collections import Counter

    n = 16
    data = write_images_dataset(tmp_path / "data", n=n)
    adapter = tiny_adapters["llava"]
    captions = adapter.caption([Image_open(p) for p in sorted((data / "images").glob("*.png"))], max_new_tokens=24)
    word = Counter(w for c in captions for w in re.findall(r"(?<!\w)[A-Za-z]+(?!\w)", c)).most_common(1)[0][0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    model_dir = tiny_model_dirs["llava"]

    proc = subprocess.Popen(_command(model_dir, data, word, tmp_path / "killed"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = tmp_path / "killed" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["position"] >= 4:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not read_manifest(tmp_path / "killed")["complete"]

    resumed = subprocess.run(_command(model_dir, data, word, tmp_path / "killed", "--resume"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run(_command(model_dir, data, word, tmp_path / "whole"), env=env, capture_output=True,
                           text=True)
    assert whole.returncode == 0, whole.stderr
    for layer in ("0", "norm"):
        Z_a, meta_a = load_features(tmp_path / "killed", layer)
        Z_b, meta_b = load_features(tmp_path / "whole", layer)
        assert Z_a.shape[0] > 0 and torch.equal(Z_a, Z_b)
        assert meta_a == meta_b
    assert [m["index"] for m in meta_a] == sorted({m["index"] for m in meta_a})  # no duplicate
    assert read_manifest(tmp_path / "killed")["counts"] == read_manifest(tmp_path / "whole")["counts"]
    captions = load_captions(tmp_path / "killed")
    assert captions == load_captions(tmp_path / "whole") and [c["index"] for c in captions] == list(range(n))


def Image_open(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_cli_errors_are_one_line(tiny_model_dirs, tmp_path, capsys):
    from mmconcepts.cli import main

    data = write_images_dataset(tmp_path / "data", n=2)
    cases = [
        (["--layers", "99"], "unknown layer"),
        (["--data", str(tmp_path / "missing")], "dataset not found"),
        (["--token", "zebra"], "kept in no image"),
    ]
    for extra, message in cases:
        command = _command(tiny_model_dirs["llava"], data, "dog", tmp_path / "out", "--mode", "teacher")[3:] + extra
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
        assert not (tmp_path / "out").exists()
    # the installed entry point: exit 2, no traceback
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(_command(tiny_model_dirs["llava"], data, "dog", tmp_path / "out", "--layers", "99"),
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "error: unknown layer" in result.stderr
