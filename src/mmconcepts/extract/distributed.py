"""Extraction on several GPUs and machines: ``torchrun`` (or ``accelerate launch``) ranks, one store.

Under a launcher (``WORLD_SIZE`` > 1 in the environment) :func:`~mmconcepts.extract.extract` gives each rank
a contiguous share of the dataset, cut at batch boundaries so every batch is the one a single process would
make, and the rank writes it to its own part, ``<out>.parts/rank-<r>-of-<W>/``, an ordinary resumable store.
When every rank is done, rank 0 merges the parts, in rank order, into ``<out>``: the same rows in dataset
order, the same features, captions and counts as a single-process run, then removes the parts. With
``--resume`` after any rank died, every rank continues its part where it stopped.

Ranks talk through ``torch.distributed`` (NCCL between GPUs, gloo on CPUs): a barrier before the merge and
an all-reduce that stops every rank when one fails, so none waits forever.

Examples
--------
``torchrun --nproc_per_node 8 -m mmconcepts extract --model llava-hf/llava-1.5-7b-hf ... --out runs/dog``
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.outputs import FolderLock


@dataclass(frozen=True)
class Rank:
    """This process's place in a launch: ``index`` of ``world`` ranks, ``local`` index on its machine."""

    index: int = 0
    world: int = 1
    local: int = 0
    cuda: bool = False


def current() -> Rank:
    """The rank a launcher started this process as (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one rank else."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Rank()
    import torch

    return Rank(index=int(os.environ.get("RANK", "0")), world=world, local=int(os.environ.get("LOCAL_RANK", "0")),
                cuda=torch.cuda.is_available())


def _group(rank: Rank):
    import torch.distributed as dist

    if not dist.is_initialized():
        if rank.cuda:
            import torch

            torch.cuda.set_device(rank.local)
        dist.init_process_group(backend="nccl" if rank.cuda else "gloo")
    return dist


def _agree(rank: Rank, failed: bool) -> bool:
    """Whether any rank failed (every rank learns it, so all stop together)."""
    import torch

    dist = _group(rank)
    flag = torch.tensor([1.0 if failed else 0.0], device=f"cuda:{rank.local}" if rank.cuda else "cpu")
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def share(n_items: int, batch_size: int, rank: Rank) -> tuple[int, int]:
    """The ``[start, stop)`` of the dataset rank ``rank`` extracts: contiguous, cut at batch boundaries.

    Examples
    --------
    >>> [share(10, 3, Rank(r, 2)) for r in range(2)]
    [(0, 6), (6, 10)]
    """
    n_batches = -(-n_items // batch_size)
    first = rank.index * n_batches // rank.world
    last = (rank.index + 1) * n_batches // rank.world
    return min(first * batch_size, n_items), min(last * batch_size, n_items)


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def extract_ranks(rank: Rank, dataset, out: Path, manifest: dict, run_part, *, resume: bool, overwrite: bool) -> dict:
    """Every rank extracts its share with ``run_part(folder, start, stop)``; rank 0 merges the parts into
    ``out``. Returns the merged store's manifest on every rank."""
    from mmconcepts.extract.store import read_manifest

    parts = parts_dir(out)
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise MMConceptsError(f"output folder {out} is not empty: pass --resume to continue it or --overwrite to "
                              "replace it")
    if rank.index == 0 and overwrite:
        shutil.rmtree(parts, ignore_errors=True)  # an older launch's parts; out itself is replaced only by merge
    _group(rank).barrier()
    if resume and (out / "manifest.json").is_file() and read_manifest(out).get("complete") and not parts.exists():
        return read_manifest(out)  # merged already
    start, stop = share(len(dataset), manifest["batch_size"], rank)
    folder = parts / f"rank-{rank.index:05d}-of-{rank.world:05d}"
    error = None
    try:
        run_part(folder, start, stop)
    except MMConceptsError as exc:
        error = exc
    if _agree(rank, error is not None):
        raise error or MMConceptsError("another rank of the launch failed; fix it and rerun with --resume")
    error = None
    if rank.index == 0:
        try:
            with FolderLock(out):
                merge([parts / f"rank-{r:05d}-of-{rank.world:05d}" for r in range(rank.world)], out, manifest)
        except MMConceptsError as exc:
            error = exc
    if _agree(rank, error is not None):
        raise error or MMConceptsError(f"merging the ranks' parts into {out} failed on rank 0")
    if rank.index == 0:
        shutil.rmtree(parts, ignore_errors=True)
    _group(rank).barrier()
    return read_manifest(out)


def merge(parts: list[Path], out: Path, manifest: dict) -> dict:
    """Concatenate finished part stores, in order, into the store ``out`` (one writer: the same shard size,
    counts summed, captions and rows in order). Refuses a word kept in no image, as a single run does."""
    from safetensors.torch import load_file

    from mmconcepts.extract.settings import RUN_COUNTS, WORD_COUNTS, store_counts
    from mmconcepts.extract.store import FeatureStoreWriter, read_manifest, read_metadata_rows, store_tokens
    from mmconcepts.extract.features import load_captions

    layers = list(manifest["layers"])
    writer = FeatureStoreWriter(out, manifest, shard_size=manifest["shard_size"], overwrite=True,
                                commit_every=manifest.get("commit_every", 256))
    run = {k: 0 for k in RUN_COUNTS}
    words = {t: {k: 0 for k in WORD_COUNTS} for t in store_tokens(manifest)}
    for part in parts:
        made = read_manifest(part)
        if not made.get("complete"):
            raise MMConceptsError(f"{part} did not finish; rerun the launch with --resume")
        rows = read_metadata_rows(part)
        taken = 0
        for i in range(made["n_shards"]):
            features = {layer: load_file(part / "shards" / layer / f"shard-{i:05d}.safetensors")["features"].float()
                        for layer in layers}
            n = features[layers[0]].shape[0]
            writer.add(features, rows[taken:taken + n])
            taken += n
        writer.add_captions(load_captions(part))
        counts = made["counts"]
        for k in RUN_COUNTS:
            run[k] += counts.get(k, 0)
        for t, c in (counts.get("tokens") or {}).items():
            for k in WORD_COUNTS:
                words[t][k] += c.get(k, 0)
        writer.commit(run["scanned"], store_counts(run, words))
    missing = [t for t, c in words.items() if c["kept"] == 0]
    if missing:
        writer.discard()
        raise MMConceptsError(f"the token {missing[0]!r} was kept in no image (scanned {run['scanned']}); try "
                              "another token, --keep generated or --mode teacher")
    return writer.close(run["scanned"], store_counts(run, words))
