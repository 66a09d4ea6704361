import json

import pytest
import torch

from mmconcepts.errors import MMConceptsError
from mmconcepts.extract.store import FeatureStoreWriter, read_manifest
from mmconcepts.extract.features import iter_feature_shards, load_features

MANIFEST = {"model": "m", "token": "dog", "mode": "generate", "layers": ["3", "norm"], "dtype": "float32",
            "hidden_size": 4, "num_layers": 4, "data": "d"}


def _batch(start, n):
    rows = torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, 4)
    return {"3": rows, "norm": -rows}, [{"id": str(i)} for i in range(start, start + n)]


def test_write_and_load_in_shards(tmp_path):
    w = FeatureStoreWriter(tmp_path / "s", MANIFEST, shard_size=4)
    for start in range(0, 10, 3):
        w.add(*_batch(start, min(3, 10 - start)))
        w.commit(start + 3, {"kept": start + 3})
    manifest = w.close(12, {"kept": 10})
    assert manifest["complete"] and manifest["n_samples"] == 10 and manifest["n_shards"] == 2
    Z, meta = load_features(tmp_path / "s", "norm")
    assert Z.dtype == torch.float32 and Z.shape == (10, 4) and torch.equal(Z[:, 0], -torch.arange(10.0))
    assert [m["id"] for m in meta] == [str(i) for i in range(10)]
    assert torch.equal(load_features(tmp_path / "s", -1)[0], load_features(tmp_path / "s", "3")[0])
    assert [s.shape[0] for s in iter_feature_shards(tmp_path / "s", "3")] == [6, 4]
    with pytest.raises(MMConceptsError, match="stored layers: 3, norm"):
        load_features(tmp_path / "s", "1")


def test_resume_rolls_back_uncommitted_work(tmp_path):
    w = FeatureStoreWriter(tmp_path / "s", MANIFEST, shard_size=2)
    w.add(*_batch(0, 2))
    w.commit(2, {"kept": 2})
    # a crash after writing more shard files and metadata lines, before progress.json
    w.add(*_batch(2, 2))
    w._meta.append({"id": "junk"})
    w._features = {k: [torch.cat([v[0], v[0][:1]])] for k, v in w._features.items()}
    w.commit(4, {"kept": 5})
    (tmp_path / "s" / "progress.json").write_text(json.dumps({"shards": 1, "n_samples": 2, "position": 2,
                                                              "counts": {"kept": 2}}))
    assert not read_manifest(tmp_path / "s")["complete"]
    with pytest.raises(MMConceptsError, match="did not finish"):
        load_features(tmp_path / "s", "norm")
    with pytest.raises(MMConceptsError, match="not empty"):
        FeatureStoreWriter(tmp_path / "s", MANIFEST)
    with pytest.raises(MMConceptsError, match="made with token='dog'"):
        FeatureStoreWriter(tmp_path / "s", {**MANIFEST, "token": "cat"}, resume=True)
    r = FeatureStoreWriter(tmp_path / "s", MANIFEST, shard_size=2, resume=True)
    assert (r.position, r.n_samples, r.counts) == (2, 2, {"kept": 2})
    r.add(*_batch(2, 2))
    r.close(4, {"kept": 4})
    Z, meta = load_features(tmp_path / "s", "3")
    assert Z[:, 0].tolist() == [0, 1, 2, 3] and len(meta) == 4


def test_overwrite_and_bad_stores(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x").write_text("x")
    w = FeatureStoreWriter(tmp_path / "s", MANIFEST, overwrite=True)
    assert (tmp_path / "s" / "x").exists()  # the new store is written beside the old one ...
    w.add(*_batch(0, 2))
    w.discard()  # ... so a run that fails leaves the old one as it was
    assert (tmp_path / "s" / "x").read_text() == "x"
    w = FeatureStoreWriter(tmp_path / "s", MANIFEST, overwrite=True)
    w.add(*_batch(0, 2))
    w.close(2, {"kept": 2})  # and swaps it in when it is complete
    assert not (tmp_path / "s" / "x").exists() and read_manifest(tmp_path / "s")["n_samples"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder or lock left
    with pytest.raises(MMConceptsError, match="no feature store"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "s" / "manifest.json").write_text("{broken")
    with pytest.raises(MMConceptsError, match="corrupt"):
        read_manifest(tmp_path / "s")
    with pytest.raises(MMConceptsError, match="unknown storage dtype"):
        FeatureStoreWriter(tmp_path / "t", {**MANIFEST, "dtype": "int8"})
