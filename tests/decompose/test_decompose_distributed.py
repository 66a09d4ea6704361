"""``mmconcepts learn`` under ``torchrun`` with 2 CPU ranks (gloo): each rank reads a contiguous range of the
rows (whatever the number of shards), the statistics are all-reduced, and the dictionary equals the
single-process one (matched concepts at cosine >= 0.99, relative error within 1%)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st
from safetensors.torch import load_file

from decompose_helpers import make_store, match_cosine, planted
from mmconcepts.cli import main
from mmconcepts.decompose import load_dictionary
from mmconcepts.decompose.distributed import Local, my_rows, row_range
from mmconcepts.extract.features import count_feature_rows, iter_feature_shards, load_features


@settings(max_examples=300, deadline=None)
@given(n_rows=st.integers(0, 10_000), world=st.integers(1, 64))
def test_ranks_read_contiguous_row_ranges_that_cover_the_rows_in_order(n_rows, world):
    class Group(Local):
        def __init__(self, rank, world):
            self.rank, self.world = rank, world

    parts = [my_rows(n_rows, Group(r, world)) for r in range(world)]
    assert parts == [row_range(n_rows, r, world) for r in range(world)]
    assert parts[0][0] == 0 and parts[-1][1] == n_rows
    for (_, stop), (start, _) in zip(parts, parts[1:]):
        assert stop == start  # contiguous, in rank order: every row in exactly one rank
    sizes = [stop - start for start, stop in parts]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1 and sum(sizes) == n_rows
    assert sizes == sorted(sizes, reverse=True)  # rank 0, which seeds the concepts, has rows when any exist
    assert [i for start, stop in parts for i in range(start, stop)] == list(range(n_rows))


def _store(path, Z, sizes, tokens=None):
    """A complete store whose shards hold ``sizes`` rows each; ``tokens``: one word per row (a store of several
    words)."""
    from mmconcepts.extract.store import FeatureStoreWriter

    words = sorted(set(tokens)) if tokens else None
    manifest = {"model": "toy-model", "mode": "generate", "layers": ["3"], "dtype": "float32",
                "hidden_size": int(Z.shape[1]), "num_layers": 4, "data": "synthetic",
                **({"tokens": words} if words else {"token": "dog"})}
    writer = FeatureStoreWriter(path, manifest, shard_size=1)  # every commit closes a shard of what was added
    s = 0
    for size in sizes:
        meta = [{"id": str(i), **({"token": tokens[i]} if tokens else {})} for i in range(s, s + size)]
        writer.add({"3": Z[s:s + size]}, meta)
        s += size
        writer.commit(position=s, counts={})
    writer.close(position=s, counts={})
    assert sum(sizes) == Z.shape[0]
    return path


@pytest.mark.parametrize("sizes, tokens", [([7, 1, 12, 5], None), ([30], None), ([6, 9, 3, 7], "mixed")])
def test_row_ranges_read_only_their_rows_in_store_order(tmp_path, monkeypatch, sizes, tokens):
    from mmconcepts.extract import features

    n = sum(sizes)
    Z = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    words = [("dog", "cat", "dog")[i % 3] for i in range(n)] if tokens else None
    store = _store(tmp_path / "s", Z, sizes, words)
    token = "dog" if tokens else None
    rows = load_features(store, "3", token)[0]
    assert count_feature_rows(store, "3", token) == rows.shape[0]
    read = []
    original = features._read_rows
    monkeypatch.setattr(features, "_read_rows", lambda f, a, b: read.append(b - a) or original(f, a, b))
    for world in (1, 2, 3, 5, rows.shape[0] + 2):
        parts = [list(iter_feature_shards(store, "3", token, rows=row_range(rows.shape[0], r, world)))
                 for r in range(world)]
        got = [torch.cat(p) if p else torch.empty(0, 3) for p in parts]
        assert all(g.dtype == torch.float32 for g in got)
        assert torch.equal(torch.cat(got), rows)  # every row once, in store order
        assert all(len(p) == 0 for p, g in zip(parts, got) if g.shape[0] == 0)
        assert sum(read) <= Z.shape[0]  # each rank reads slices: no row is read twice
        read.clear()
    for start, stop in ((0, 1), (3, 11), (rows.shape[0] - 1, rows.shape[0])):
        assert torch.equal(torch.cat(list(iter_feature_shards(store, "3", token, rows=(start, stop)))),
                           rows[start:stop])


def _learn_on_ranks(tmp_path, store, method, ranks=2, k=5):
    """``mmconcepts learn`` in this process and on ``ranks`` gloo ranks: the two folders."""
    args = ["learn", "--features", str(store), "--method", method, "-k", str(k), "--no-ground", "--device", "cpu",
            "--stream"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                               "--master_port", str(29700 + os.getpid() % 200), "-m", "mmconcepts", *args,
                               "--out", str(tmp_path / "two")], env={**os.environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr
    return tmp_path / "one", tmp_path / "two"


def _assert_same_dictionary(one, two, Z, ranks=2, k=5):
    d1, d2 = load_dictionary(one), load_dictionary(two)
    assert match_cosine(d1.components_, d2.components_) >= 0.99
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["ranks"] == ranks and s2["n_samples"] == s1["n_samples"] == Z.shape[0]
    assert abs(s2["relative_error"] - s1["relative_error"]) <= 0.01 * s1["relative_error"]
    V = load_file(two / "activations.safetensors")["activations"]
    assert V.shape == (Z.shape[0], k)  # every rank's rows, in store order: they match the dictionary's encoding
    assert torch.allclose(V, d2.transform(Z), atol=5e-2 * float(V.abs().max()))


@pytest.mark.slow
@pytest.mark.parametrize("sizes", [[1200], [590, 3, 607]], ids=["one-shard", "three-uneven-shards"])
def test_two_ranks_learn_any_store_as_one_process(tmp_path, sizes):
    """A store of one shard (fewer shards than ranks), and of three uneven shards (a rank's range starts in a
    shard of fewer rows than concepts, and ends inside another): each rank reads a row range."""
    Z, _, _ = planted(n=1200, d=32, k=5, noise=0.05, seed=4)
    store = _store(tmp_path / "store", Z, sizes)
    _assert_same_dictionary(*_learn_on_ranks(tmp_path, store, "semi-nmf"), Z)


@pytest.mark.slow
def test_more_ranks_than_rows_learn_as_one_process(tmp_path):
    """A rank with no rows adds zeros to the sums and still gets its (empty) share of the activations."""
    Z, _, _ = planted(n=2, d=8, k=1, noise=0.05, seed=1)
    store = _store(tmp_path / "store", Z, [2])
    _assert_same_dictionary(*_learn_on_ranks(tmp_path, store, "semi-nmf", ranks=3, k=1), Z, ranks=3, k=1)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["semi-nmf", "nmf"])
def test_two_ranks_learn_the_single_process_dictionary(tmp_path, method):
    Z, _, _ = planted(n=1200, d=32, k=5, noise=0.05, seed=4, nonnegative_concepts=method == "nmf")
    if method == "nmf":
        Z = Z.clamp(min=0)
    store = make_store(tmp_path / "store", Z, shard_size=100)
    _assert_same_dictionary(*_learn_on_ranks(tmp_path, store, method), Z)


@pytest.mark.slow
def test_ranks_that_leave_rank_0_fewer_rows_than_concepts_are_refused_on_every_rank(tmp_path):
    """Rank 0 seeds the concepts on its own rows: too few of them is a one-line error, on every rank alike."""
    Z, _, _ = planted(n=6, d=8, k=2, noise=0.05, seed=1)
    store = _store(tmp_path / "store", Z, [6])
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(29700 + os.getpid() % 200), "-m", "mmconcepts", "learn",
                               "--features", str(store), "-k", "5", "--no-ground", "--device", "cpu",
                               "--out", str(tmp_path / "two")], env={**os.environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode != 0
    errors = [line for line in launched.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: 6 rows on 2 ranks leave rank 0 3, fewer than the 5 concepts: use at most 1 rank"] * 2
    assert not (tmp_path / "two").exists()
