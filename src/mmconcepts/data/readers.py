"""Dataset readers: one interface over every captioned-image layout mmconcepts accepts.

- a folder (or file) with ``captions.jsonl``: one ``{"image": "rel/path.png", "captions": [...]}`` per line,
  optional ``"attributes"`` (ShapesWorld ground truth), ``"split"`` and ``"id"``;
- a folder (or file) with ``captions.csv``: columns ``image`` and ``caption``; an image may take several rows;
- a COCO Karpathy-style ``dataset_coco.json`` (``images`` with ``filepath``, ``filename``, ``split`` and
  ``sentences``), its images under ``image_root``;
- a folder written by Hugging Face ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (see
  :mod:`mmconcepts.data.hf`; needs the optional ``datasets`` package).

Image paths are resolved against the dataset root and must stay inside it.

Examples
--------
>>> from mmconcepts.data import open_dataset
>>> from mmconcepts.data.shapesworld import write_dataset
>>> folder = write_dataset("shapes/test", n=4, seed=0, split="test")   # captions.jsonl + images/
>>> data = open_dataset("shapes/test")
>>> len(data), data.kind, data.has_attributes
(4, 'jsonl', True)
>>> sample = data[0]
>>> sample.captions[0]
'a circle at the top of small size in orange , one star in blue on the left of large size and one circle ...'
>>> image = sample.load()
>>> image.size, image.mode
((64, 64), 'RGB')
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from mmconcepts.errors import MMConceptsError, check_count

KARPATHY_SPLITS = ("train", "restval", "val", "test")


class ImageLoadError(MMConceptsError):
    """An image that is missing or cannot be decoded (extraction skips and counts these unless strict)."""


@dataclass
class Sample:
    """One captioned image: ``image`` is an absolute path; ``attributes`` is ShapesWorld ground truth."""

    id: str
    image: Path
    captions: list[str]
    attributes: dict | None = None
    split: str | None = None

    def load(self) -> Image.Image:
        """The image upright (EXIF orientation applied) and as RGB (grey-scale, palette and RGBA images are
        converted; alpha over white); :func:`load_image`."""
        return load_image(self.image)


@dataclass
class Dataset:
    """A list of samples and where they came from."""

    source: Path
    root: Path
    kind: str
    samples: list[Sample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def __iter__(self):
        return iter(self.samples)

    @property
    def has_attributes(self) -> bool:
        return any(s.attributes is not None for s in self.samples)


def _rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def _upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation tag says (as an image viewer shows it); unchanged without the
    tag, or when the EXIF block itself cannot be read (the pixels are still good)."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
        return im


def _reason(exc: BaseException) -> str:
    """Why an image could not be read, in one line: the exception's type and its message."""
    if isinstance(exc, UnidentifiedImageError):
        detail = "not an image format Pillow can read"
    elif isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    else:
        detail = str(exc)
    detail = " ".join(detail.split()).rstrip(".")
    return f"{type(exc).__name__} ({detail})" if detail else type(exc).__name__


def _open_rgb(source, name, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open ``source`` (a path or a binary file object) upright and as RGB; errors name ``name``.

    Every failure becomes an :class:`ImageLoadError`: a missing file, a directory, a symlink loop or any other
    ``OSError``, a format Pillow cannot identify, a truncated or corrupt file, and an image over Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS`` (``DecompressionBombError``, or its warning where warnings are errors).
    """
    try:
        with Image.open(source) as im:
            if draft is not None:
                im.draft("RGB", draft)
            im.load()
            return _rgb(_upright(im))
    except FileNotFoundError:
        raise ImageLoadError(f"image not found: {name}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"cannot read image {name}: {_reason(exc)}; replace or remove it, or raise "
                             "PIL.Image.MAX_IMAGE_PIXELS for images you trust") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on a corrupt file
        raise ImageLoadError(f"cannot read image {name}: {_reason(exc)}; replace or remove it") from None


def load_image(path: str | os.PathLike, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open an image as a person sees it: EXIF orientation applied, as RGB (alpha over white).

    Every place that reads an image file goes through here (datasets, the DataLoader, ``explain``, ``steer``,
    the concept maps, the report's thumbnails), so they all see the same pixels.

    Parameters
    ----------
    path : str or os.PathLike
        The image file, or a reference to an image stored in a saved Hugging Face dataset,
        ``<dataset folder>/<split>#<row>`` or ``<dataset folder>/#<row>`` (see :mod:`mmconcepts.data.hf`).
    draft : (int, int) or None
        Let the decoder reduce the image while decoding, to no less than this size (JPEG only; for
        thumbnails); ``None`` reads it whole.

    Returns
    -------
    PIL.Image.Image
        An RGB image, already loaded (the file is closed).

    Raises
    ------
    ImageLoadError
        One line naming the file and the reason: a missing file, a directory, a symlink loop or another
        ``OSError``, an unidentified format, a truncated or corrupt file, or more pixels than
        ``PIL.Image.MAX_IMAGE_PIXELS`` allows (a decompression bomb).

    Examples
    --------
    >>> from PIL import Image
    >>> Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save("logo.png")
    >>> image = load_image("logo.png")          # alpha composited over white
    >>> image.mode, image.size, image.getpixel((0, 0))
    ('RGB', (40, 30), (255, 127, 127))
    >>> load_image("missing.png")
    Traceback (most recent call last):
    ...
    mmconcepts.data.readers.ImageLoadError: image not found: missing.png
    """
    path = Path(path)
    if "#" in path.name:
        from mmconcepts.data import hf

        if hf.is_reference(path):
            image = hf.open_reference(path)
            if image is not None:
                return image
    return _open_rgb(path, path, draft)


def _inside(root: Path, rel: str, where: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise MMConceptsError(f"{where}: the image path must be a non-empty string")
    # os.path.realpath, not Path.resolve: on Python < 3.13 a symlink loop makes resolve raise RuntimeError, and
    # such an image is to be skipped when it is read (ImageLoadError), not to abort opening the dataset
    path = Path(os.path.realpath(root / rel))
    if not path.is_relative_to(os.path.realpath(root)):
        raise MMConceptsError(f"{where}: image path {rel!r} escapes the dataset root {root}; use a path inside it")
    return path


def _captions(value, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise MMConceptsError(f"{where}: 'captions' must be a string or a list of strings")
    return value


def _read_jsonl(path: Path, root: Path) -> list[Sample]:
    samples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MMConceptsError(f"{where}: not valid JSON ({exc.msg}); fix or remove the line") from None
            if not isinstance(row, dict) or "image" not in row:
                raise MMConceptsError(f"{where}: missing field 'image'; each line needs 'image' and 'captions'")
            captions = _captions(row.get("captions", row.get("caption", [])), where)
            attributes = row.get("attributes")
            if attributes is not None and not isinstance(attributes, dict):
                raise MMConceptsError(f"{where}: 'attributes' must be an object")
            samples.append(Sample(id=str(row.get("id", Path(row["image"]).stem if isinstance(row["image"], str)
                                                 else n)),
                                  image=_inside(root, row["image"], where), captions=captions,
                                  attributes=attributes, split=row.get("split")))
    return samples


def _read_csv(path: Path, root: Path) -> list[Sample]:
    by_image: dict[str, Sample] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "image" not in reader.fieldnames:
            raise MMConceptsError(f"{path}: the header must name the columns 'image' and 'caption'")
        for n, row in enumerate(reader, 2):
            where = f"{path}:{n}"
            rel = (row.get("image") or "").strip()
            sample = by_image.get(rel)
            if sample is None:
                sample = Sample(id=row.get("id") or Path(rel).stem, image=_inside(root, rel, where), captions=[],
                                split=row.get("split") or None)
                by_image[rel] = sample
            caption = (row.get("caption") or "").strip()
            if caption:
                sample.captions.append(caption)
    return list(by_image.values())


def _read_karpathy(path: Path, root: Path) -> list[Sample]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MMConceptsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise MMConceptsError(f"{path}: expected a Karpathy-style file with a top-level 'images' list")
    samples = []
    for i, entry in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or "filename" not in entry:
            raise MMConceptsError(f"{where}: missing field 'filename'")
        sentences = entry.get("sentences", [])
        if not isinstance(sentences, list):
            raise MMConceptsError(f"{where}: 'sentences' must be a list")
        captions = []
        for s in sentences:
            if isinstance(s, dict) and isinstance(s.get("raw"), str):
                captions.append(s["raw"].strip())
            elif isinstance(s, dict) and isinstance(s.get("tokens"), list):
                captions.append(" ".join(map(str, s["tokens"])))
            else:
                raise MMConceptsError(f"{where}: each sentence needs 'raw' or 'tokens'")
        rel = os.path.join(entry.get("filepath", ""), entry["filename"])
        ident = entry.get("cocoid", entry.get("imgid", Path(entry["filename"]).stem))
        samples.append(Sample(id=str(ident), image=_inside(root, rel, where), captions=captions,
                              split=entry.get("split")))
    return samples


def open_dataset(path: str | os.PathLike, image_root: str | os.PathLike | None = None, split: str | None = None,
                 limit: int | None = None, image_column: str | None = None,
                 caption_column: str | None = None) -> Dataset:
    """Open a captioned-image dataset in any supported layout.

    Parameters
    ----------
    path : folder holding ``captions.jsonl`` or ``captions.csv``, or one of those files, or a Karpathy-style
        ``.json`` file, or a folder written by Hugging Face ``Dataset.save_to_disk`` /
        ``DatasetDict.save_to_disk`` (needs the optional ``datasets`` package).
    image_root : where the images live (Karpathy files, path-string images of a Hugging Face dataset);
        defaults to the file's folder (the dataset folder).
    split : keep only samples of this split (samples without a split are kept). For a saved ``DatasetDict``,
        the split to read (required when it has several).
    limit : keep at most this many samples (after the split filter).
    image_column : Hugging Face datasets only: the column with the images (default ``"image"``).
    caption_column : Hugging Face datasets only: the column with the captions (default: the first of
        ``caption``, ``captions``, ``sentences``, ``text``).

    Examples
    --------
    A ``captions.csv`` whose image takes two rows (two captions):

    >>> from pathlib import Path
    >>> from PIL import Image
    >>> Path("pets/images").mkdir(parents=True)
    >>> Image.new("RGB", (32, 32), "brown").save("pets/images/rex.png")
    >>> _ = Path("pets/captions.csv").write_text("image,caption\\n"
    ...                                          "images/rex.png,a dog on the grass\\n"
    ...                                          "images/rex.png,a brown dog\\n")
    >>> data = open_dataset("pets")
    >>> data.kind, len(data), data[0].captions
    ('csv', 1, ['a dog on the grass', 'a brown dog'])
    """
    check_count("limit (--limit)", limit, 1, optional=True)  # never a slice: -1 would drop the last image
    path = Path(path)
    if not path.exists():
        raise MMConceptsError(f"dataset not found: {path}; pass a folder with captions.jsonl/csv, a saved Hugging "
                              "Face dataset folder, or a .json file")
    if image_root is not None and not Path(image_root).is_dir():
        raise MMConceptsError(f"image root not found: {image_root}")
    if path.is_dir():
        for name in ("captions.jsonl", "captions.csv"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            from mmconcepts.data import hf

            if hf.hf_layout(path) is None:
                raise MMConceptsError(f"no captions.jsonl or captions.csv in {path}, and it is not a saved Hugging "
                                      "Face dataset (dataset_dict.json, or state.json + dataset_info.json); see "
                                      "`mmconcepts shapesworld --help` for the layout")
            dataset = hf.read_hf(path, image_root=image_root, split=split, limit=limit, image_column=image_column,
                                 caption_column=caption_column)
            if not dataset.samples:
                raise MMConceptsError(f"{path}: no samples" + (f" in split {split!r}" if split else ""))
            return dataset
    root = Path(image_root) if image_root is not None else path.parent
    readers = {".jsonl": ("jsonl", _read_jsonl), ".csv": ("csv", _read_csv), ".json": ("karpathy", _read_karpathy)}
    if path.suffix not in readers:
        raise MMConceptsError(f"unsupported dataset file {path.name}: use captions.jsonl, captions.csv or a "
                              "Karpathy-style .json")
    kind, reader = readers[path.suffix]
    try:
        samples = reader(path, root)
    except UnicodeDecodeError:
        raise MMConceptsError(f"{path}: not UTF-8 text; is this the right file?") from None
    if split is not None:
        samples = [s for s in samples if s.split is None or s.split == split]
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise MMConceptsError(f"{path}: no samples" + (f" in split {split!r}" if split else ""))
    return Dataset(source=path, root=root, kind=kind, samples=samples)
