"""The Noise-Imgs baseline's data: uniform-noise images read with the training captions.

CoX-LMM's control for whether concepts come from the images at all: the model reads the training captions
(teacher mode) over images of pure noise, and a dictionary learnt from those representations is grounded
and scored like any other. :func:`noise_dataset` is an ordinary :class:`~mmconcepts.data.Dataset` whose
samples draw their noise image when loaded (seeded per sample, nothing written to disk), so the baseline's
features come from the same :func:`~mmconcepts.extract.extract` as every store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmconcepts.data.readers import Dataset, Sample


@dataclass
class NoiseSample(Sample):
    """A sample whose image is uniform noise of ``size``, drawn from ``seed`` when loaded."""

    size: tuple[int, int] = (64, 64)
    seed: int = 0

    def load(self):
        import numpy as np
        from PIL import Image

        width, height = self.size
        rng = np.random.default_rng(self.seed)
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def noise_dataset(train_store, train_meta: list[dict], n: int, seed: int) -> Dataset:
    """``n`` noise images (the size of the first training image), each with a training caption.

    The ``i``-th sample reads training sample ``i mod N``'s first reference caption (its generated caption
    when it has none); its noise is drawn from ``(seed, i)``.
    """
    from mmconcepts.data.readers import load_image

    size = load_image(train_meta[0]["image"]).size
    samples = []
    for i in range(n):
        m = train_meta[i % len(train_meta)]
        caption = m["references"][0] if m.get("references") else m["caption"]
        samples.append(NoiseSample(id=f"noise-{i}", image=Path(f"noise-{i}.png"), captions=[caption],
                                   size=size, seed=seed * 1_000_003 + i))
    store = Path(train_store)
    return Dataset(source=store / "metadata.jsonl", root=store, kind="noise", samples=samples)
