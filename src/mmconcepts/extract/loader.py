"""Feeding the model: images read, converted and preprocessed in ``torch.utils.data.DataLoader`` workers.

A GPU captioning 40+ images a second would otherwise wait on JPEG decoding and resizing in the main thread.
:func:`batches` yields the dataset's slices ``[start, start + batch_size)`` from ``start`` on, in order
(the DataLoader keeps it), each as a :class:`~mmconcepts.extract.batches.Batch` of its readable images with,
in generate mode, the processor's inputs already made (in pinned memory when the model is on a GPU, so the
copy overlaps). Unreadable images are left out of their batch and returned by name, so the caller counts
them (or stops, with ``strict``) exactly as when it read them itself. ``num_workers=0`` does the same work
in the main process.
"""

from __future__ import annotations

from mmconcepts.data.readers import Dataset, ImageLoadError
from mmconcepts.extract.batches import Batch


class _Images:
    """``dataset[i]`` for ``i`` in ``[start, stop)``: ``(i, sample, image or None, error or None)``."""

    def __init__(self, dataset: Dataset, start: int, stop: int):
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, j: int):
        i = self.start + j
        sample = self.dataset[i]
        try:
            return i, sample, sample.load(), None
        except ImageLoadError as exc:
            return i, sample, None, str(exc)


class _Collate:
    """Turns a list of ``_Images`` items into ``(Batch, errors)``; in generate mode it also runs the processor
    (in the worker), so only tensors cross to the main process."""

    def __init__(self, processor, prompt: str | None):
        self.processor, self.prompt = processor, prompt

    def __call__(self, items):
        from mmconcepts.models.base import encode_inputs

        good = [(i, s, im) for i, s, im, err in items if err is None]
        errors = [err for _, _, _, err in items if err is not None]
        batch = Batch([i for i, _, _ in good], [s for _, s, _ in good])
        if good and self.prompt is not None:
            batch.inputs = encode_inputs(self.processor, [im for _, _, im in good], [self.prompt] * len(good))
        else:
            batch.images = [im for _, _, im in good]
        return batch, errors, items[-1][0] + 1 if items else None


def batches(dataset: Dataset, start: int, stop: int, batch_size: int, *, processor=None, prompt: str | None = None,
            num_workers: int = 0, pin_memory: bool = False):
    """Yield ``(batch, errors, end)`` for the slices of ``dataset[start:stop]``, ``batch_size`` images each.

    Parameters
    ----------
    processor, prompt : with a ``prompt`` (generate mode) every batch carries the processor's inputs for it;
        without (teacher mode, whose texts depend on the captions), it carries the images.
    num_workers : DataLoader worker processes (0: the main process); each prefetches two batches.
    pin_memory : page-lock the inputs (for a model on a GPU).

    Yields
    ------
    (Batch, list of str, int) : the readable images of the slice, the errors of the unreadable ones, and
    the dataset position after the slice.
    """
    import torch
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    if stop <= start:
        return
    images = _Images(dataset, start, stop)
    loader = DataLoader(images, batch_sampler=BatchSampler(SequentialSampler(images), batch_size, drop_last=False),
                        collate_fn=_Collate(processor, prompt), num_workers=num_workers,
                        pin_memory=pin_memory and torch.cuda.is_available(),
                        prefetch_factor=2 if num_workers else None)
    yield from loader
