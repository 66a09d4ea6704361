"""Nothing lost, nothing silently wrong: one writer per folder, replace only on success, records checked on read.

Each test drives the real commands (``mmconcepts.cli.main`` or a subprocess) on the tiny LLaVA pipeline of
``tests/conftest.py`` (teacher-mode 'dog' features, a 4-concept Semi-NMF folder) and asserts what a user sees:
exit 2, one ``error:`` line, no traceback, the old data byte for byte, no temp folder left behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmconcepts.cli import main
from mmconcepts.errors import MMConceptsError
from mmconcepts.outputs import FolderLock, OutputFolder, check_disjoint, clean_debris, swap_in


def _digest(folder: Path) -> dict:
    """Every file of a folder and its content hash: the folder, byte for byte."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys, argv, *words) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _no_debris(parent: Path) -> None:
    left = [p.name for p in parent.iterdir() if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name
                                                                           or p.name.endswith(".lock"))]
    assert not left, left


@pytest.fixture()
def run(tmp_path, tiny_pipeline, tiny_llava_dir):
    """A private copy of the tiny pipeline's store and concepts folder (tests tamper with them)."""
    root = tmp_path / "run"
    root.mkdir()
    for name in ("train", "test"):
        shutil.copytree(tiny_pipeline[name], root / f"features-{name}")
    shutil.copytree(tiny_pipeline["root"] / "train", root / "data-train")
    shutil.copytree(tiny_pipeline["concepts"], root / "concepts")
    for store in ("features-train", "features-test"):  # the copies point at their own data
        manifest = json.loads((root / store / "manifest.json").read_text())
        manifest["data"]["root"] = manifest["data"]["source"] = "../data-train"
        (root / store / "manifest.json").write_text(json.dumps(manifest))
    summary = json.loads((root / "concepts" / "summary.json").read_text())
    summary["features"] = "../features-train"
    (root / "concepts" / "summary.json").write_text(json.dumps(summary))
    return {"root": root, "adapter": tiny_pipeline["adapter"], "model": tiny_llava_dir}


# ------------------------------------------------------------------------------------------ the locking itself

def test_lock_refuses_a_second_writer_and_names_the_owner(tmp_path):
    folder = tmp_path / "out"
    script = ("import sys, time; from mmconcepts.outputs import FolderLock; "
              f"FolderLock({str(folder)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(MMConceptsError, match=rf"being written by pid {owner.pid} on .*wait for it"):
            FolderLock(folder).acquire()
        with pytest.raises(MMConceptsError, match="being written"):
            with OutputFolder(folder):
                pass
        assert not folder.exists()
    finally:
        owner.send_signal(signal.SIGKILL)  # kill -9: the kernel drops the lock
        owner.wait()
    with FolderLock(folder):  # a stale lock file is taken over
        with FolderLock(folder):  # and the lock is reentrant in one process
            pass
    _no_debris(tmp_path)


def test_output_folder_swaps_only_a_finished_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(MMConceptsError, match="not empty"):
        with OutputFolder(out):
            pass
    with pytest.raises(RuntimeError):
        with OutputFolder(out, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("the run fails half-way")
    assert _digest(out) == {"old.txt": hashlib.sha256(b"old").hexdigest()}
    with OutputFolder(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # a reader sees the old folder until the swap
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    _no_debris(tmp_path)


def test_debris_of_killed_writers_is_cleaned_and_a_half_swap_repaired(tmp_path):
    out = tmp_path / "out"
    (tmp_path / ".out.tmp-abc").mkdir()
    (tmp_path / ".out.tmp-abc" / "half").write_text("x")
    # killed between the two renames of a swap: out is gone, the old folder is set aside
    (tmp_path / ".out.old-1-2").mkdir()
    (tmp_path / ".out.old-1-2" / "data").write_text("precious")
    with FolderLock(out):
        clean_debris(out)
    assert (out / "data").read_text() == "precious"
    _no_debris(tmp_path)


def test_swap_is_one_step(tmp_path, monkeypatch):
    """Where the filesystem exchanges atomically, the new folder replaces the old with no moment between."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "new").write_text("1")
    (b / "old").write_text("1")
    seen = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda *args: seen.append(args) or real_rename(*args))
    swap_in(a, b)
    assert [p.name for p in b.iterdir()] == ["new"] and not a.exists()
    assert seen == []  # renameat2(RENAME_EXCHANGE), not two renames


@pytest.mark.parametrize("relation", ["same", "inside", "contains"])
def test_an_output_overlapping_an_input_is_refused(tmp_path, relation):
    data = tmp_path / "data"
    out = {"same": data, "inside": data / "sub", "contains": tmp_path}[relation]
    with pytest.raises(MMConceptsError, match="--out"):
        check_disjoint(out, [data])


def test_folders_and_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with OutputFolder(tmp_path / "shared") as tmp:
            from mmconcepts.files import write_json

            write_json(tmp / "x.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "shared" / "x.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------- commands, end to end

def test_extract_into_its_own_dataset_is_refused_and_nothing_deleted(run, capsys):
    data = run["root"] / "data-train"
    before = _digest(data)
    _one_line_error(capsys, ["extract", "--data", data, "--out", data, "--token", "dog", "--overwrite",
                             "--mode", "teacher", "--model", run["model"]], "input")
    _one_line_error(capsys, ["extract", "--data", data, "--out", data / "features", "--token", "dog",
                             "--mode", "teacher", "--model", run["model"]], "inside the input")
    assert _digest(data) == before


def test_extract_overwrite_that_fails_keeps_the_old_store(run):
    from mmconcepts.extract import extract

    store = run["root"] / "features-train"
    before = _digest(store)
    with pytest.raises(MMConceptsError, match="kept in no image"):
        extract(run["root"] / "data-train", "zebra", out=store, model=run["adapter"], layers=["norm"],
                mode="teacher", overwrite=True, progress=False)
    assert _digest(store) == before
    _no_debris(run["root"])


def test_learn_overwrite_whose_grounding_fails_keeps_the_old_folder(run, capsys, tmp_path):
    concepts = run["root"] / "concepts"
    before = _digest(concepts)
    _one_line_error(capsys, ["learn", "--features", run["root"] / "features-train", "--layer", "norm", "-k", "3",
                             "--out", concepts, "--overwrite", "--model", tmp_path / "no-such-model"])
    assert _digest(concepts) == before
    _one_line_error(capsys, ["learn", "--features", concepts, "--out", concepts, "--overwrite"])
    _one_line_error(capsys, ["learn", "--features", run["root"] / "features-train", "--layer", "norm", "--out",
                             run["root"] / "features-train", "--overwrite"], "input")
    assert _digest(concepts) == before
    _no_debris(run["root"])


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0, 5.0])
def test_learn_killed_at_any_time_leaves_the_old_folder_or_the_new_one(run, delay):
    concepts = run["root"] / "concepts"
    before = _digest(concepts)
    argv = ["learn", "--features", str(run["root"] / "features-train"), "--layer", "norm", "-k", "3", "--out",
            str(concepts), "--overwrite", "--model", str(run["model"]), "--seed", "3"]
    child = subprocess.Popen([sys.executable, "-c", "import sys; from mmconcepts.cli import main; "
                              f"sys.exit(main({argv!r}))"], stderr=subprocess.PIPE)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    after = _digest(concepts)
    assert after == before or {"grounding.json", "summary.json", "dictionary.safetensors"} <= set(after)
    # the next run cleans the debris up and succeeds
    assert main(argv) == 0
    assert "grounding.json" in _digest(concepts)
    _no_debris(run["root"])


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(run, capsys, monkeypatch):
    concepts = run["root"] / "concepts"
    before = _digest(concepts)
    from mmconcepts import files

    real = files.os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(files.os, "replace", full)
    line = _one_line_error(capsys, ["learn", "--features", run["root"] / "features-train", "--layer", "norm",
                                    "-k", "3", "--out", concepts, "--overwrite", "--no-ground"],
                           "No space left on device", "free some space")
    assert "cannot write" in line
    monkeypatch.setattr(files.os, "replace", real)
    assert _digest(concepts) == before
    _no_debris(run["root"])


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="root ignores permissions")
def test_a_read_only_folder_is_one_line(run, capsys, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    argv = ["shapesworld", "--out", locked / "data", "--n", "2"]
    if os.geteuid() == 0:  # drop root's override of permissions for the command under test
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                               f"import sys; from mmconcepts.cli import main; sys.exit(main({[str(a) for a in argv]!r}))"],
                              capture_output=True, text=True, env=env, cwd="/")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and "ermission" in lines[0], proc.stderr
    else:
        _one_line_error(capsys, argv, "ermission")
    assert list(locked.iterdir()) == []


def test_an_out_that_is_a_file_is_one_line(run, capsys, tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    _one_line_error(capsys, ["shapesworld", "--out", file, "--n", "2"], "not a folder")
    _one_line_error(capsys, ["evaluate", "--concepts", run["root"] / "concepts", "--test-features",
                             run["root"] / "features-test", "--out", file], "not a folder")
    _one_line_error(capsys, ["shapesworld", "--out", file / "sub", "--n", "2"])
    assert file.read_text() == "x"


# ------------------------------------------------------------------------------------------- tampered files

def _shard(store: Path) -> Path:
    return store / "shards" / "norm" / "shard-00000.safetensors"


@pytest.mark.parametrize("tamper,message", [
    ("int8", "stored as I8"),
    ("columns", "has shape"),
    ("rows", "rows"),
    ("metadata", "line 2 is not valid JSON"),
    ("manifest", "should be int"),
])
def test_a_tampered_store_is_refused_by_name(run, capsys, tamper, message):
    from safetensors.torch import load_file, save_file

    store = run["root"] / "features-train"
    features = load_file(_shard(store))["features"]
    if tamper == "int8":
        save_file({"features": features.to(torch.int8)}, _shard(store))
    elif tamper == "columns":
        save_file({"features": features[:, :-1].contiguous()}, _shard(store))
    elif tamper == "rows":
        save_file({"features": features[:-1].contiguous()}, _shard(store))
    elif tamper == "metadata":
        lines = (store / "metadata.jsonl").read_text().splitlines()
        lines[1] = lines[1][:-5]
        (store / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    elif tamper == "manifest":
        manifest = json.loads((store / "manifest.json").read_text())
        manifest["hidden_size"] = "64"
        (store / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(capsys, ["learn", "--features", store, "--layer", "norm", "-k", "3", "--out",
                             run["root"] / "new", "--no-ground"], message)
    assert not (run["root"] / "new").exists()


@pytest.mark.parametrize("tamper,message", [
    ("other-k", "the dictionary has 2 concepts"),
    ("layer", "learnt with layer='norm'"),
    ("grounding", "grounds 3 concepts, the dictionary has 4"),
    ("grounding-index", "concept 1 is missing or out of place"),
])
def test_a_tampered_concepts_folder_is_refused_by_name(run, capsys, tamper, message):
    from mmconcepts.decompose import SemiNMF

    concepts = run["root"] / "concepts"
    summary = json.loads((concepts / "summary.json").read_text())
    grounding = json.loads((concepts / "grounding.json").read_text())
    if tamper == "other-k":  # another folder's dictionary copied in
        SemiNMF(n_concepts=2).fit(torch.rand(20, summary["hidden_size"])).save(concepts)
    elif tamper == "layer":
        (concepts / "summary.json").write_text(json.dumps({**summary, "layer": "0"}))
    elif tamper == "grounding":
        (concepts / "grounding.json").write_text(json.dumps({**grounding, "concepts": grounding["concepts"][:3]}))
    elif tamper == "grounding-index":
        del grounding["concepts"][1]
        (concepts / "grounding.json").write_text(json.dumps(grounding))
    image = next((run["root"] / "data-train").rglob("*.png"))
    _one_line_error(capsys, ["explain", "--concepts", concepts, "--image", image], message)
    _one_line_error(capsys, ["report", "--concepts", concepts, "--out", run["root"] / "r.html"])
    assert not (run["root"] / "r.html").exists()


# -------------------------------------------------------------------------------------------- numerical kernels

def test_point_activations_do_not_depend_on_the_batch_or_the_threads():
    """A sample equal to a concept has activation exactly 1, alone or in any batch, with any thread count
    (the distance is computed from differences, not through |a|^2 + |b|^2 - 2ab in float32)."""
    from mmconcepts.decompose import Simple

    g = torch.Generator().manual_seed(0)
    Z = torch.randn(300, 48, generator=g) * 40 + 7
    model = Simple(n_concepts=3).fit(Z)
    full = model.transform(Z)
    rows = model.indices_.tolist()
    assert all(float(full[r, k]) == 1.0 for k, r in enumerate(rows))
    assert all(torch.equal(model.transform(Z[i:i + 1]), full[i:i + 1]) for i in range(0, 300, 7))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(model.transform(Z), full)
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------- the hub

def test_an_unreachable_hub_is_one_fast_line(monkeypatch, capsys):
    """No network and a hub id not in the cache: one line at once (a name lookup), not half a minute of
    retries. The lookup is patched to fail, so nothing leaves the machine."""
    import socket

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.perf_counter()
    line = _one_line_error(capsys, ["info", "--model", "nobody-here/no-such-model"], "cannot be reached",
                           "not in the local cache")
    assert time.perf_counter() - start < 10, line
