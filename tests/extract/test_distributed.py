"""``torchrun`` with 2 CPU ranks (gloo): the merged store equals a single-process run; a rank killed mid-run and
the launch resumed gives the same store."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mmconcepts.extract import load_captions, load_features, read_manifest
from mmconcepts.extract.distributed import Rank, share
from tests.fixtures.datasets import write_images_dataset


def test_shares_are_contiguous_batch_aligned_and_cover_the_dataset():
    for n in (1, 7, 10, 33):
        for world in (1, 2, 3, 8):
            for batch in (1, 2, 5):
                parts = [share(n, batch, Rank(r, world)) for r in range(world)]
                assert parts[0][0] == 0 and parts[-1][1] == n
                assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
                assert all(start % batch == 0 for start, _ in parts if start < n)


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _extract(model_dir, data, out, *extra):
    return ["extract", "--model", str(model_dir), "--data", str(data), "--token", "dog,grass", "--mode", "teacher",
            "--layers", "0,norm", "--batch-size", "2", "--shard-size", "3", "--commit-every", "2", "--dtype",
            "float32", "--num-workers", "0", "--out", str(out), "--quiet", *extra]


#: ``mmconcepts`` under torchrun; with ``KILL_RANK`` set, that rank SIGKILLs itself as it starts its
#: ``KILL_AT``-th batch (counting from 0), after it has committed progress: a rank dying mid-run.
DRIVER = """
import os, signal, sys
from mmconcepts.extract import extraction
teacher, seen = extraction.teacher_rows, []
def dying(*args, **kwargs):
    seen.append(1)
    if os.environ.get("RANK") == os.environ.get("KILL_RANK") and len(seen) == int(os.environ["KILL_AT"]) + 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return teacher(*args, **kwargs)
extraction.teacher_rows = dying
from mmconcepts.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(args, driver=None, **env):
    target = [str(driver)] if driver else ["-m", "mmconcepts"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29500 + os.getpid() % 1000), *target, *args]
    return subprocess.Popen(command, env=_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _same_store(a, b):
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["counts"] == mb["counts"] and ma["n_samples"] == mb["n_samples"] > 0
    for token in ("dog", "grass"):
        for layer in ("0", "norm"):
            Za, meta_a = load_features(a, layer, token=token)
            Zb, meta_b = load_features(b, layer, token=token)
            assert torch.equal(Za, Zb) and meta_a == meta_b
    assert load_captions(a) == load_captions(b)


@pytest.mark.slow
def test_two_ranks_give_the_single_process_store_and_resume_after_a_rank_dies(tiny_llava_dir, tmp_path):
    data = write_images_dataset(tmp_path / "data", n=14)
    single = subprocess.run([sys.executable, "-m", "mmconcepts", *_extract(tiny_llava_dir, data, tmp_path / "one")],
                            env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    proc = _torchrun(_extract(tiny_llava_dir, data, tmp_path / "two"))
    assert proc.wait(timeout=240) == 0, proc.stderr.read()
    _same_store(tmp_path / "two", tmp_path / "one")
    assert not (tmp_path / "two.parts").exists()  # merged, parts removed

    # a launch whose rank 1 dies as it starts its third batch (two committed), then resumed
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = _torchrun(_extract(tiny_llava_dir, data, tmp_path / "killed"), driver, KILL_RANK="1", KILL_AT="2")
    assert proc.wait(timeout=240) != 0, "the launch ended although a rank was killed"
    progress = tmp_path / "killed.parts" / "rank-00001-of-00002" / "progress.json"
    start, _ = share(14, 2, Rank(1, 2))  # rank 1's share starts at image 6
    assert json.loads(progress.read_text())["position"] == start + 2 * 2  # it had committed 2 batches
    assert not (tmp_path / "killed" / "manifest.json").exists() or \
        not read_manifest(tmp_path / "killed").get("complete")
    resumed = _torchrun(_extract(tiny_llava_dir, data, tmp_path / "killed", "--resume"))
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read()
    _same_store(tmp_path / "killed", tmp_path / "one")
