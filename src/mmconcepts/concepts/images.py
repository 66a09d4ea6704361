"""A concepts folder's top images: their paths as stored (links, with the absolute path as a fallback) and as
found on this machine, which of them are missing and where they were looked for, and the thumbnails a folder
carries (``learn --copy-images``) so that it can be sent alone to a colleague.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmconcepts.errors import MMConceptsError
from mmconcepts.files import atomic_write_bytes, link, link_fields, resolve

#: Long side, in pixels, of the thumbnails ``copy_images`` carries in a concepts folder (``images/``).
THUMBNAIL_PX = 128


def _image_at(im, base: Path, to_stored: bool):
    """One concept image entry with its paths stored relative to ``base`` (``image`` with the absolute path as
    ``image_absolute``, ``thumbnail``), or resolved from it (``image``: the link if it leads somewhere, else the
    absolute path if that does, else the link)."""
    if not isinstance(im, dict) or not isinstance(im.get("image"), str):
        return im
    if to_stored:
        im = {**im, **link_fields("image", im["image"], base)}
        if im.get("thumbnail"):
            im["thumbnail"] = link(im["thumbnail"], base)
        return im
    found = resolve(im["image"], base)
    fallback = im.get("image_absolute")
    if not image_exists(found) and isinstance(fallback, str) and image_exists(fallback):
        found = Path(fallback)
    im = {**im, "image": str(found)}
    if isinstance(im.get("thumbnail"), str) and im["thumbnail"]:
        im["thumbnail"] = str(resolve(im["thumbnail"], base))
    return im


def images_at(grounding: dict, base: Path, to_stored: bool) -> dict:
    """``grounding`` with every concept image's paths stored relative to ``base`` (or resolved from it)."""
    concepts = [{**c, "images": [_image_at(im, base, to_stored) for im in c.get("images", [])]}
                if isinstance(c, dict) and isinstance(c.get("images"), list) else c
                for c in grounding.get("concepts", [])]
    return {**grounding, "concepts": concepts}


def image_exists(path) -> bool:
    """Whether an image path leads to an image on this machine (a file, or an image of a saved Hugging Face
    dataset that is there: ``<dataset folder>/<split>#<row>``)."""
    from mmconcepts.data.hf import is_reference

    try:
        path = Path(path)
        return path.is_file() or (is_reference(path) and path.parent.is_dir())
    except (OSError, ValueError):  # a name too long, a NUL byte: not an image here
        return False


def shown_image(im: dict) -> str:
    """The picture to show for a concept image entry (resolved, as :class:`ConceptSet` holds it): the original
    when it exists, else the thumbnail the folder carries when that does, else the original's path."""
    thumbnail = im.get("thumbnail")
    if not image_exists(im["image"]) and isinstance(thumbnail, str) and thumbnail and image_exists(thumbnail):
        return thumbnail
    return im["image"]


def _common_dir(paths: list[str]) -> str:
    parents = sorted({os.path.dirname(p) for p in paths})
    try:
        return os.path.commonpath(parents) if len(parents) > 1 else parents[0]
    except ValueError:  # different drives
        return parents[0]


def missing_images(grounding: dict | None, folder) -> str | None:
    """One line on the top images of the concepts folder ``folder`` (its ``grounding``, paths resolved as
    :func:`load_concepts` holds them) found neither at their original place (the link, then the absolute
    path it had when grounded) nor as a carried thumbnail: how many, where they were looked for and what to
    do; ``None`` when every one is found."""
    if not isinstance(grounding, dict):
        return None
    entries = {}
    for concept in grounding.get("concepts") or []:
        for im in (concept.get("images") or []) if isinstance(concept, dict) else []:
            if isinstance(im, dict) and isinstance(im.get("image"), str):
                entries.setdefault(im["image"], im)
    missing = [im for im in entries.values() if not image_exists(shown_image(im))]
    if not missing:
        return None
    places = [_common_dir([im["image"] for im in missing])]
    fallbacks = [im["image_absolute"] for im in missing if isinstance(im.get("image_absolute"), str)]
    if fallbacks and _common_dir(fallbacks) not in places:
        places.append(_common_dir(fallbacks))
    carried = [im for im in missing if im.get("thumbnail")]
    fix = (f"their thumbnails ({len(carried)}) are missing too: copy the whole concepts folder, images/ included"
           if carried else "learn with --copy-images to carry them, or put the dataset back there")
    return (f"{len(missing)} of {len(entries)} top images of {folder} are missing (looked in "
            f"{' and '.join(places)}); {fix}")


def _thumbnail(image: str, px: int = THUMBNAIL_PX) -> tuple[bytes, str]:
    """A small copy of an image, ``px`` pixels at most on its long side: PNG when the image is that small
    already (pixel art stays exact), else JPEG; with its file suffix."""
    import io

    from mmconcepts.data.readers import load_image

    try:
        pil = load_image(image)
    except MMConceptsError as exc:  # ImageLoadError: one line naming the file
        raise MMConceptsError(f"cannot carry a thumbnail of a concept image (--copy-images): {exc}; put the "
                              "dataset back, or ground without --copy-images") from None
    buf = io.BytesIO()
    if max(pil.size) <= px:
        pil.save(buf, format="PNG", optimize=True)
        return buf.getvalue(), ".png"
    pil.thumbnail((px, px))
    pil.save(buf, format="JPEG", quality=85)
    return buf.getvalue(), ".jpg"


def copy_thumbnails(images: list[list[dict]], folder) -> None:
    """Write a thumbnail of every concept image into ``folder/images/`` (named by content, so an image that
    tops several concepts is written once) and record its path as ``"thumbnail"`` in each entry."""
    import hashlib

    folder = Path(folder)
    written = {}
    for entries in images:
        for im in entries:
            if im["image"] not in written:
                data, suffix = _thumbnail(im["image"])
                file = folder / "images" / (hashlib.sha256(data).hexdigest()[:16] + suffix)
                if not file.is_file():
                    file.parent.mkdir(exist_ok=True)
                    atomic_write_bytes(file, data)
                written[im["image"]] = str(file)
            im["thumbnail"] = written[im["image"]]
