"""``mmconcepts learn`` under ``torchrun`` with 2 CPU ranks (gloo): each rank reads half the shards, the
statistics are all-reduced, and the dictionary equals the single-process one (matched concepts at cosine
>= 0.99, relative error within 1%)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from decompose_helpers import make_store, match_cosine, planted
from mmconcepts.decompose import load_dictionary
from mmconcepts.decompose.distributed import Local, my_shards


def test_ranks_read_contiguous_shards_that_cover_the_store():
    class Group(Local):
        def __init__(self, rank, world):
            self.rank, self.world = rank, world

    for n in (2, 5, 16):
        for world in (1, 2, 3):
            parts = [my_shards(n, Group(r, world)) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["semi-nmf", "nmf"])
def test_two_ranks_learn_the_single_process_dictionary(tmp_path, method):
    Z, _, _ = planted(n=1200, d=32, k=5, noise=0.05, seed=4, nonnegative_concepts=method == "nmf")
    if method == "nmf":
        Z = Z.clamp(min=0)
    store = make_store(tmp_path / "store", Z, shard_size=100)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["learn", "--features", str(store), "--method", method, "-k", "5", "--no-ground", "--device", "cpu",
            "--stream"]
    single = subprocess.run([sys.executable, "-m", "mmconcepts", *args, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                            "--master_port", str(29700 + os.getpid() % 200), "-m", "mmconcepts", *args,
                            "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert ranks.returncode == 0, ranks.stderr
    one, two = load_dictionary(tmp_path / "one"), load_dictionary(tmp_path / "two")
    assert match_cosine(one.components_, two.components_) >= 0.99
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["ranks"] == 2 and s2["n_samples"] == s1["n_samples"] == 1200
    assert abs(s2["relative_error"] - s1["relative_error"]) <= 0.01 * s1["relative_error"]
    V = load_file(tmp_path / "two" / "activations.safetensors")["activations"]
    assert V.shape == (1200, 5)  # every rank's rows, in store order: they match the dictionary's encoding
    assert torch.allclose(V, two.transform(Z), atol=5e-2 * float(V.abs().max()))
