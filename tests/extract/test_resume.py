"""Kill an extraction with SIGKILL at random points, resume it, and get exactly the uninterrupted result;
resuming with any changed setting is refused by name."""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

from mmconcepts.cli import main
from mmconcepts.extract import load_captions, load_features, read_manifest
from tests.fixtures.datasets import write_images_dataset

BATCH, COMMIT_EVERY, SHARD = 2, 4, 3  # shards close mid-commit, so resumes reload a half-full open shard
#: Runs ``mmconcepts extract``, logs the dataset position of every batch it starts (flushed at once), so the
#: test knows how far it had scanned, and with ``KILL_AFTER`` set SIGKILLs itself ``KILL_DELAY_MS`` after it
#: starts batch number ``KILL_AFTER`` (counting from 0): somewhere in that batch or its commit, never after
#: the run has ended.
DRIVER = """
import os, signal, sys, threading
from mmconcepts.extract import extraction
log = open(sys.argv[1], "a", buffering=1)
generate = extraction.generate_rows
kill_after = int(os.environ.get("KILL_AFTER", "-1"))
started = []
def logged(adapter, batch, *args, **kwargs):
    log.write(f"{batch.indices[0]}\\n")
    started.append(batch.indices[0])
    if len(started) == kill_after + 1:
        delay = int(os.environ.get("KILL_DELAY_MS", "0")) / 1000
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return generate(adapter, batch, *args, **kwargs)
extraction.generate_rows = logged
from mmconcepts.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _command(model_dir, data, word, out, *extra):
    return ["extract", "--model", str(model_dir), "--data", str(data), "--token", word, "--keep", "generated",
            "--layers", "0,norm", "--batch-size", str(BATCH), "--shard-size", str(SHARD), "--commit-every",
            str(COMMIT_EVERY), "--max-new-tokens", "24", "--min-new-tokens", "24", "--dtype", "float16",
            "--out", str(out), "--quiet", *extra]


def _frequent_word(adapter, data) -> str:
    import re
    from collections import Counter

    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted((data / "images").glob("*.png"))]
    captions = adapter.caption(images, max_new_tokens=24)
    return Counter(w for c in captions for w in re.findall(r"(?<!\w)[A-Za-z]+(?!\w)", c)).most_common(1)[0][0]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _run_until_killed(command, log, kill_after: int, delay_ms: int) -> None:
    """Run the driver; it SIGKILLs itself ``delay_ms`` after starting batch ``kill_after``."""
    log.write_text("")
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(log), *command], timeout=120, capture_output=True,
                          text=True, env=_env(KILL_AFTER=str(kill_after), KILL_DELAY_MS=str(delay_ms)))
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {proc.stderr}"


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tiny_model_dirs, tiny_adapters, tmp_path):
    n = 24
    data = write_images_dataset(tmp_path / "data", n=n)
    word = _frequent_word(tiny_adapters["llava"], data)
    model_dir = tiny_model_dirs["llava"]
    killed, log = tmp_path / "killed", tmp_path / "batches.log"
    rng = random.Random(7)
    rescanned = []
    for attempt in range(3):  # three crashes at random points, each resumed
        extra = ("--resume",) if attempt else ()
        _run_until_killed(_command(model_dir, data, word, killed, *extra), log, kill_after=rng.randint(1, 4),
                          delay_ms=rng.randint(0, 40))
        started = [int(x) for x in log.read_text().split()]
        position = json.loads((killed / "progress.json").read_text())["position"] if \
            (killed / "progress.json").exists() else 0
        # what the killed run had scanned beyond its last commit is all a resume scans again
        assert started[-1] - position <= COMMIT_EVERY, (started, position)
        rescanned.append(started[-1] - position)
        assert not read_manifest(killed)["complete"]
    log.write_text("")
    resumed = subprocess.run([sys.executable, "-c", DRIVER, str(log), *_command(model_dir, data, word, killed,
                                                                              "--resume")],
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run([sys.executable, "-m", "mmconcepts", *_command(model_dir, data, word, tmp_path / "whole")],
                           env=_env(), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    for layer in ("0", "norm"):
        Z_a, meta_a = load_features(killed, layer)
        Z_b, meta_b = load_features(tmp_path / "whole", layer)
        assert Z_a.shape[0] > SHARD and torch.equal(Z_a, Z_b)
        assert meta_a == meta_b
        shards = sorted((killed / "shards" / layer).iterdir())
        assert [f.read_bytes() for f in shards] == \
            [f.read_bytes() for f in sorted((tmp_path / "whole" / "shards" / layer).iterdir())]
    assert [m["index"] for m in meta_a] == sorted({m["index"] for m in meta_a})  # no duplicate
    assert read_manifest(killed) == read_manifest(tmp_path / "whole") | {
        "data": read_manifest(killed)["data"]}  # the same run record, but for where the store is
    captions = load_captions(killed)
    assert captions == load_captions(tmp_path / "whole") and [c["index"] for c in captions] == list(range(n))


@pytest.mark.parametrize("extra, setting", [
    (["--limit", "3"], "limit=4, not 3"),
    (["--keep", "both"], "keep='generated', not 'both'"),
    (["--also", "dogs"], "also=[], not ['dogs']"),
    (["--instruction", "Describe the image."], "instruction="),
    (["--max-new-tokens", "9"], "max_new_tokens=8, not 9"),
    (["--model-dtype", "bfloat16"], "model_options.model_dtype='float32', not 'bfloat16'"),
    (["--layers", "norm"], "layers=['0', 'norm'], not ['norm']"),
    (["--split", "test"], "split=None, not 'test'"),
])
def test_resume_refuses_a_changed_setting_by_name(tiny_model_dirs, tmp_path, capsys, extra, setting):
    data = write_images_dataset(tmp_path / "data", n=6)
    out = tmp_path / "store"
    base = ["extract", "--model", str(tiny_model_dirs["llava"]), "--data", str(data), "--token", "dog",
            "--keep", "generated", "--mode", "teacher", "--layers", "0,norm", "--limit", "4", "--max-new-tokens",
            "8", "--out", str(out), "--quiet"]
    assert main(base) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    changed = list(base)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in changed:
            changed[changed.index(flag) + 1] = value
        else:
            changed += [flag, value]
    assert main(changed + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot resume {out}: it was made with") and setting in err[0]
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    assert main(base + ["--resume"]) == 0  # the same settings resume (a finished store stays as it is)


def test_resume_refuses_a_changed_dataset(tiny_model_dirs, tmp_path, capsys):
    data = write_images_dataset(tmp_path / "data", n=4)
    base = ["extract", "--model", str(tiny_model_dirs["llava"]), "--data", str(data), "--token", "dog",
            "--mode", "teacher", "--out", str(tmp_path / "store"), "--quiet"]
    assert main(base) == 0
    lines = (data / "captions.jsonl").read_text().splitlines()
    (data / "captions.jsonl").write_text("\n".join(lines[:3]) + "\n")
    assert main(base + ["--resume"]) == 2
    assert "it was made with data.fingerprint='sha256:" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_errors_are_one_line(tiny_model_dirs, tmp_path, capsys):
    data = write_images_dataset(tmp_path / "data", n=2)
    cases = [
        (["--layers", "99"], "unknown layer"),
        (["--data", str(tmp_path / "missing")], "dataset not found"),
        (["--token", "zebra"], "kept in no image"),
    ]
    for extra, message in cases:
        command = _command(tiny_model_dirs["llava"], data, "dog", tmp_path / "out", "--mode", "teacher") + extra
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
        assert not (tmp_path / "out").exists()
    # the installed entry point: exit 2, no traceback
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "mmconcepts",
                             *_command(tiny_model_dirs["llava"], data, "dog", tmp_path / "out", "--layers", "99")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "error: unknown layer" in result.stderr
