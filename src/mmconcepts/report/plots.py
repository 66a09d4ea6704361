"""Figures for the HTML report, rendered with matplotlib (Agg, no pyplot state) and returned as base64 PNG.

Also the image thumbnails: every image the report shows is read here and re-encoded as a small data URI, so
the report never references a file or a URL. Text from the data never reaches a figure except through
:func:`_plain`, which keeps matplotlib from reading it as mathtext.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

ACCENT = "#4f46e5"
INK = "#1f2433"
MUTED = "#6b7280"
GRID = "#e5e7eb"
#: Line colours of the per-layer plot, the main method first.
PALETTE = ("#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#0ea5e9", "#a855f7", "#64748b", "#ec4899")

_RC = {
    "font.size": 9,
    "axes.edgecolor": GRID,
    "axes.labelcolor": MUTED,
    "axes.titlesize": 9,
    "axes.titlecolor": INK,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",
}


def _plain(text) -> str:
    """Data text as matplotlib shows it literally (``$`` would start mathtext)."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, dpi: int = 160, layout: str | None = "constrained"):
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas is attached in _png

    return Figure(figsize=(width, height), dpi=dpi, layout=layout)


def histogram_png(values: np.ndarray, bins: int = 28) -> str:
    """A small histogram of one concept's activations over the training samples.

    Kept lean (one filled step artist, fixed axes, no layout engine): a report draws one per concept.
    The caller decides which values to pass (the report leaves out exact zeros, which dominate sparse codes).
    """
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    with matplotlib.rc_context(_RC):
        fig = _figure(2.2, 0.95, dpi=192, layout=None)
        ax = fig.add_axes((0.03, 0.27, 0.94, 0.7))
        if values.size:
            lo, hi = float(values.min()), float(values.max())
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
            ax.stairs(counts, edges, fill=True, color=ACCENT, alpha=0.85, linewidth=0)
            ax.set_xlim(lo, hi)
            ax.set_ylim(0, max(1, counts.max()) * 1.05)
        else:
            ax.text(0.5, 0.5, "no nonzero activation", ha="center", va="center", transform=ax.transAxes,
                    fontsize=7, color=MUTED)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
        ax.tick_params(labelsize=7, length=2, pad=1)
        return _png(fig)


def heatmap_png(matrix, labels: list[str]) -> tuple[str, int]:
    """The ``K x K`` overlap matrix as a heatmap (concept indices on both axes, values annotated when K is
    small), and the width in CSS pixels to show it at."""
    import matplotlib

    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    size = min(6.0, max(2.6, 0.3 * k + 1.2))
    with matplotlib.rc_context(_RC):
        fig = _figure(size + 0.9, size)
        ax = fig.add_subplot()
        image = ax.imshow(m, cmap="Purples", vmin=0.0, vmax=max(1.0, float(np.nanmax(m)) if m.size else 1.0),
                          interpolation="nearest")
        step = max(1, math.ceil(k / 24))
        ticks = list(range(0, k, step))
        ax.set_xticks(ticks, [_plain(labels[i]) for i in ticks], fontsize=7, rotation=90 if k > 12 else 0)
        ax.set_yticks(ticks, [_plain(labels[i]) for i in ticks], fontsize=7)
        ax.set_xlabel("concept k")
        ax.set_ylabel("concept l")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    v = m[i, j]
                    if np.isfinite(v):
                        ax.text(j, i, "0" if v == 0 else "1" if v == 1 else f"{v:.2f}", ha="center",
                                va="center", fontsize=6.5, color="white" if v > 0.55 else INK)
        bar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
        bar.outline.set_visible(False)
        bar.ax.tick_params(labelsize=7, length=0)
        return _png(fig), round((size + 0.9) * 96 * 1.15)


def sweep_png(layers: list, metrics: dict[str, dict[str, list]], main: str | None = None,
              labels: dict[str, str] | None = None, baselines=()) -> str:
    """Metrics per layer: one small panel per metric, one line per method (the main method first and bold,
    baselines dashed grey). Metrics with no value at any layer are left out."""
    labels = labels or {}
    methods = sorted(metrics, key=lambda name: (name in baselines, name != main, name))
    names: list[str] = []
    for method in methods:
        for metric, series in metrics[method].items():
            if metric not in names and any(v is not None for v in series):
                names.append(metric)
    names = [m for m in labels if m in names] + [m for m in names if m not in labels]
    if not names:
        raise ValueError("no metric to plot")
    x = np.arange(len(layers))

    def panel(ax, metric: str) -> None:
        colours = itertools.count()
        for method in methods:
            series = metrics[method].get(metric)
            if series is None:
                continue
            y = np.array([np.nan if _num(v) is None else float(v) for v in series], dtype=np.float64)
            if y.shape != x.shape:
                raise ValueError(f"{method}/{metric} has {y.size} values for {x.size} layers")
            style = line_style(method in baselines, colours, width=2.2 if method == main else 1.2)
            ax.plot(x, y, label=_plain(method), **style)
        ax.set_title(_plain(labels.get(metric, metric)), loc="left")
        ax.set_xticks(x, [_plain(layer) for layer in layers], fontsize=7)

    return panels_png(names, len(names) if len(names) <= 4 else 3, (3.1, 1.9, 0.3), panel)


def line_style(baseline: bool, colours: Iterator[int], width: float = 1.2) -> dict:
    """The keyword arguments of ``ax.plot`` for one line of a small-multiples panel: a baseline dashed grey,
    a method ``width`` points wide in the next colour of :data:`PALETTE` (``colours`` counts the panel's
    methods)."""
    if baseline:
        return {"color": "#9ca3af", "linestyle": "--", "linewidth": 1.1, "marker": "."}
    return {"color": PALETTE[next(colours) % len(PALETTE)], "marker": "o", "markersize": 3, "linewidth": width}


def panels_png(metrics: Sequence[str], cols: int, size: tuple[float, float, float],
               draw: Callable[[Any, str], None]) -> str:
    """Small multiples as a PNG data URI: one panel per metric, ``cols`` panels a row, each drawn by
    ``draw(ax, metric)`` then given the common look, one legend above them all.

    Parameters
    ----------
    metrics : sequence of str
        One panel each, in order.
    cols : int
        Panels a row.
    size : (float, float, float)
        Width and height of one panel and the height of the legend above them, in inches.
    draw : callable
        Draws one panel's lines, labels and ticks.

    Returns
    -------
    str
    """
    import matplotlib

    width, height, legend = size
    rows = math.ceil(len(metrics) / cols)
    with matplotlib.rc_context(_RC):
        fig = _figure(width * cols, height * rows + legend)
        axes = fig.subplots(rows, cols, squeeze=False)
        for n, metric in enumerate(metrics):
            ax = axes[n // cols][n % cols]
            draw(ax, metric)
            style_panel(ax)
        finish_panels(fig, axes, len(metrics))
        return _png(fig)


def style_panel(ax) -> None:
    """The small-multiples look of one panel: small ticks, a light grid behind the lines."""
    ax.tick_params(labelsize=7, length=2)
    ax.grid(color=GRID, linewidth=0.5)
    ax.set_axisbelow(True)


def finish_panels(fig, axes, n_used: int) -> None:
    """Hide the grid's panels after the first ``n_used`` and draw one legend above all of them (each label
    once, in the order the panels first use it)."""
    cols = axes.shape[1]
    for n in range(n_used, axes.size):
        axes[n // cols][n % cols].set_visible(False)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 6), frameon=False, fontsize=8)


def _num(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


# --- thumbnails ------------------------------------------------------------------------------------------

#: Images at most this large (both sides) are pixel art: upscaled with nearest neighbour and stored as PNG.
PIXEL_ART_MAX = 128


@lru_cache(maxsize=1024)
def _thumbnail_cached(path: str, mtime: float, size: int, box: tuple | None = None) -> tuple[str, bool]:
    from PIL import Image, ImageDraw

    from mmconcepts.data.readers import load_image

    im = load_image(path, draft=(size, size) if box is None else None)  # upright, RGB, as the model read it
    width = im.width
    pixel = max(im.size) <= PIXEL_ART_MAX
    if pixel:
        factor = max(1, size // max(im.size))
        if factor > 1:
            im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
        fmt = "PNG"
    else:
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
        fmt = "JPEG"
    if box is not None:  # an image-token concept's patch, outlined in the image's own pixels scaled
        scale = im.width / width
        ImageDraw.Draw(im).rectangle([round(v * scale) for v in box], outline=(255, 0, 170),
                                     width=max(1, im.width // 96))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 85, "optimize": True} if fmt == "JPEG" else {"optimize": True}))
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii"), pixel


@lru_cache(maxsize=8)
def placeholder(size: int, text: str = "missing") -> str:
    """A grey square with ``text`` on it, for an image file that is missing or unreadable."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (size, size), (226, 228, 233))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, size - 1, size - 1), outline=(200, 203, 210))
    try:
        font = ImageFont.load_default(size=max(10, size // 6))
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    box = draw.textbbox((0, 0), text, font=font)
    w, h = box[2] - box[0], box[3] - box[1]
    draw.text(((size - w) / 2 - box[0], (size - h) / 2 - box[1]), text, fill=(107, 114, 128), font=font)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(path, size: int = 192, box=None) -> dict:
    """``{"src": data URI, "pixel": bool, "missing": bool}`` for the image at ``path`` (``size`` px at most),
    with ``box`` (``[x0, y0, x1, y1]`` in the image's pixels: an image-token concept's patch) outlined.

    The image is read by :func:`mmconcepts.data.load_image`: upright (EXIF orientation applied), as the model
    read it. Small images (pixel art such as 64x64 ShapesWorld scenes) are upscaled by an integer factor with
    nearest neighbour so they stay crisp; photographs are downscaled and stored as JPEG. A missing or
    unreadable file (a symlink loop, a truncated file, more pixels than Pillow allows) gives a grey placeholder
    that says "missing", never an exception.

    Examples
    --------
    >>> from mmconcepts.data.shapesworld import write_dataset
    >>> _ = write_dataset("shapes", n=1, seed=0)
    >>> shown = thumbnail("shapes/images/000000.png")     # 64 x 64 pixel art: upscaled 3x, kept crisp
    >>> shown["src"][:22], shown["pixel"], shown["missing"]
    ('data:image/png;base64,', True, False)
    >>> thumbnail("gone.png")["missing"]
    True
    """
    try:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise FileNotFoundError(path)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        box = tuple(float(v) for v in box) if box is not None else None
        src, pixel = _thumbnail_cached(os.path.abspath(path), os.path.getmtime(path), size, box)
        return {"src": src, "pixel": pixel, "missing": False}
    except Exception:  # noqa: BLE001 - any unreadable image becomes a placeholder, the report still builds
        return {"src": placeholder(size), "pixel": False, "missing": True}


def file_data_uri(path) -> str | None:
    """A PNG file (e.g. ``sweep.png``) as a data URI, after checking that it is one; ``None`` otherwise."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
            if im.format != "PNG":
                return None
        with open(path, "rb") as f:
            return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")
    except Exception:  # noqa: BLE001
        return None


# --- concept maps ----------------------------------------------------------------------------------------

def _open_rgb(image):
    from PIL import Image

    from mmconcepts.data.readers import load_image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return load_image(image)  # upright: the map's box is in the pixels the model read


def overlay_png_bytes(image, grid, box, size: int = 192) -> bytes:
    """A concept map over its image as PNG bytes: the image in grey (pixel art kept crisp) under the map's
    positive part in the ``inferno`` colours, each cell as opaque as its value relative to the map's maximum
    (cells under a twentieth of it left clear); ``size`` px on the longer side. ``box`` is the
    ``(x0, y0, x1, y1)`` region of the image the ``rows x cols`` grid covers."""
    import matplotlib

    im = _open_rgb(image)
    w, h = im.size
    grey = np.asarray(im.convert("L"), dtype=np.float64) / 255
    values = np.clip(np.nan_to_num(np.asarray(grid, dtype=np.float64)), 0, None)
    top = float(values.max()) if values.size else 0.0
    share = values / top if top > 0 else values
    rgba = matplotlib.colormaps["inferno"](0.35 + 0.65 * share)
    rgba[..., 3] = np.where(share >= 0.05, 0.35 + 0.5 * share, 0.0)
    scale = size / max(w, h)
    with matplotlib.rc_context(_RC):
        fig = _figure(w * scale / 96, h * scale / 96, dpi=96, layout=None)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(0.25 + 0.6 * grey, cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0),
                  interpolation="nearest" if max(w, h) <= PIXEL_ART_MAX else "antialiased")
        x0, y0, x1, y1 = (float(v) for v in box)
        ax.imshow(rgba, extent=(x0, x1, y1, y0), interpolation="nearest")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_axis_off()
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
        return buf.getvalue()


def overlay_png(image, grid, box, size: int = 192) -> str:
    """:func:`overlay_png_bytes` as a base64 data URI (what the report embeds)."""
    return "data:image/png;base64," + base64.b64encode(overlay_png_bytes(image, grid, box, size)).decode("ascii")
