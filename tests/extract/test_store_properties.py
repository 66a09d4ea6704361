"""Property-based tests of the feature store's commit / rollback (Hypothesis): whatever the batch sizes,
shard size, commit interval and crash point, a store that crashed and was resumed is byte for byte the
store of an uninterrupted run, and a crash loses at most ``commit_every`` scanned images."""

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmconcepts.extract import store as store_module
from mmconcepts.extract.store import FeatureStoreWriter, read_manifest
from mmconcepts.extract.features import load_captions, load_features

MANIFEST = {"model": "m", "token": "dog", "mode": "generate", "layers": ["3", "norm"], "dtype": "float16",
            "hidden_size": 3, "num_layers": 4, "data": {"kind": "jsonl", "fingerprint": "sha256:x"}}


class Crash(Exception):
    """Stands for the process dying at one point of a commit."""


def _batches(plan):
    """``plan``: ``[(scanned, kept), ...]`` -> ``[(start, stop, features, meta, captions), ...]``."""
    out, position, row = [], 0, 0
    for scanned, kept in plan:
        kept = min(kept, scanned)
        rows = torch.arange(row, row + kept, dtype=torch.float32)[:, None] * torch.tensor([[1.0, 0.5, -2.0]])
        meta = [{"id": str(row + i), "index": position + i} for i in range(kept)]
        captions = [{"index": position + i, "caption": f"c{position + i}"} for i in range(scanned)]
        out.append((position, position + scanned, {"3": rows, "norm": -rows}, meta, captions))
        position, row = position + scanned, row + kept
    return out


def _run(path, batches, shard_size, commit_every, start_batch=0, resume=False):
    writer = FeatureStoreWriter(path, MANIFEST, shard_size=shard_size, commit_every=commit_every, resume=resume)
    counts = dict(writer.counts) or {"kept": 0, "scanned": 0}
    for start, stop, features, meta, captions in batches[start_batch:]:
        counts = {"kept": counts["kept"] + len(meta), "scanned": stop}
        if meta:
            writer.add(features, meta)
        writer.add_captions(captions)
        writer.commit(stop, counts)
    return writer, counts


def _files(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 4)), min_size=1, max_size=12),
       shard_size=st.integers(1, 5), commit_every=st.integers(1, 6), crash_at=st.integers(0, 11),
       stage=st.sampled_from(["shards", "metadata", "progress"]))
def test_crash_anywhere_then_resume_equals_uninterrupted(plan, shard_size, commit_every, crash_at, stage,
                                                         monkeypatch):
    batches = _batches(plan)
    root = Path(tempfile.mkdtemp())
    try:
        whole, counts = _run(root / "whole", batches, shard_size, commit_every)
        whole.close(batches[-1][1], counts)

        # the crashed run: the commit after batch `crash_at` dies at `stage`
        crash_at = crash_at % len(batches)
        target = {"shards": "atomic_write_bytes", "metadata": "_append_lines", "progress": "write_json"}[stage]
        real = getattr(store_module, target)
        seen = {"batch": -1}

        def dying(path, *args, **kwargs):
            if seen["batch"] >= crash_at and not str(path).endswith("manifest.json"):
                raise Crash
            return real(path, *args, **kwargs)

        monkeypatch.setattr(store_module, target, dying)
        writer = FeatureStoreWriter(root / "crashed", MANIFEST, shard_size=shard_size, commit_every=commit_every)
        counts = {"kept": 0, "scanned": 0}
        try:
            for i, (start, stop, features, meta, captions) in enumerate(batches):
                seen["batch"] = i
                counts = {"kept": counts["kept"] + len(meta), "scanned": stop}
                if meta:
                    writer.add(features, meta)
                writer.add_captions(captions)
                writer.commit(stop, counts)
            writer.close(batches[-1][1], counts)
            crashed_at = None
        except Crash:
            crashed_at = stop
        monkeypatch.setattr(store_module, target, real)

        resumed = FeatureStoreWriter(root / "crashed", MANIFEST, shard_size=shard_size, commit_every=commit_every,
                                     resume=True)
        if crashed_at is not None:  # at most commit_every scanned images are lost
            assert crashed_at - resumed.position <= commit_every + max(s for s, _ in plan)
            assert [b[0] for b in batches].count(resumed.position) == 1 or resumed.position == batches[-1][1]
        first = next((i for i, b in enumerate(batches) if b[0] == resumed.position), len(batches))
        writer, counts = _run(root / "crashed", batches, shard_size, commit_every, start_batch=first, resume=True)
        writer.close(batches[-1][1], counts if first < len(batches) else resumed.counts)

        assert _files(root / "crashed") == _files(root / "whole")
        assert read_manifest(root / "crashed")["complete"]
        for layer in ("3", "norm"):
            Z, meta = load_features(root / "crashed", layer)
            assert Z.shape[0] == len(meta) == sum(len(b[3]) for b in batches)
        assert [c["index"] for c in load_captions(root / "crashed")] == list(range(batches[-1][1]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_commit_writes_nothing_before_it_is_due(tmp_path):
    writer = FeatureStoreWriter(tmp_path / "s", MANIFEST, shard_size=100, commit_every=10)
    (start, stop, features, meta, captions), = _batches([(4, 2)])
    writer.add(features, meta)
    writer.add_captions(captions)
    writer.commit(stop, {"kept": 2})
    assert not (tmp_path / "s" / "progress.json").exists()  # 4 < 10 scanned: not due yet
    writer.commit(12, {"kept": 2})
    assert (tmp_path / "s" / "progress.json").exists()
    assert (tmp_path / "s" / "shards" / "3" / "shard-00000.safetensors").exists()  # the open shard, 2 rows


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_commit_interval_must_be_a_positive_integer(tmp_path, value):
    from mmconcepts.errors import MMConceptsError

    with pytest.raises(MMConceptsError, match="--commit-every must be an integer >= 1"):
        FeatureStoreWriter(tmp_path / "s", MANIFEST, commit_every=value)
