"""Where an image's tokens sit on it: a :class:`PatchLayout` of one or several :class:`TokenGrid`.

A grid is an evenly divided box of the original image, with the index of the image token of every cell; a
layout is the grids of one image, in prompt order, and the number of image tokens the prompt holds for it.
:func:`~mmconcepts.models.patches.patch_layout` computes the layout of a model's processor (per family, in
:mod:`~mmconcepts.models.patches`, or measured: :mod:`~mmconcepts.models.patch_probe`).

Boxes are ``(x0, y0, x1, y1)`` in the original image's pixel coordinates (pixel edges: the image spans
``(0, 0, W, H)``); a box may reach outside the image where the processor padded it.

Examples
--------
>>> layout = PatchLayout((40, 20), 8, (TokenGrid(2, 4, (0, 0, 40, 20), tuple(range(8))),))
>>> layout.main.cell_size
(10.0, 10.0)
>>> layout.grid_values(range(8)).tolist()
[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PatchLayout", "TokenGrid"]


@dataclass(frozen=True)
class TokenGrid:
    """A box of the original image divided into ``rows x cols`` equal cells, one image token each.

    Parameters
    ----------
    rows, cols : int
        Cells down and across.
    box : tuple of float
        ``(x0, y0, x1, y1)``, the region the grid covers, in the original image's pixels.
    tokens : tuple of int
        Row-major, the index (among the image's tokens, in prompt order) of each cell's token.
    name : str
        What the grid is: ``"image"``, ``"tiles"``, ``"global"`` or ``"base"``.
    """

    rows: int
    cols: int
    box: tuple[float, float, float, float]
    tokens: tuple[int, ...]
    name: str = "image"

    def __post_init__(self):
        if self.rows < 1 or self.cols < 1 or len(self.tokens) != self.rows * self.cols:
            raise ValueError(f"a {self.rows} x {self.cols} grid needs {self.rows * self.cols} tokens, "
                             f"got {len(self.tokens)}")
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))

    @property
    def cell_size(self) -> tuple[float, float]:
        """``(width, height)`` of one cell in original pixels."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) / self.cols, (y1 - y0) / self.rows

    def cell_boxes(self):
        """``rows * cols x 4`` float array: the box of every cell, row-major."""
        import numpy as np

        x0, y0, _, _ = self.box
        w, h = self.cell_size
        r, c = np.divmod(np.arange(self.rows * self.cols), self.cols)
        return np.stack([x0 + c * w, y0 + r * h, x0 + (c + 1) * w, y0 + (r + 1) * h], axis=1)


@dataclass(frozen=True)
class PatchLayout:
    """The image tokens of one image: how many the prompt holds and the grids that place them.

    Parameters
    ----------
    size : tuple of int
        ``(width, height)`` of the original image.
    n_tokens : int
        Image tokens in the prompt for this image (tokens in no grid, such as LLaVA-NeXT's row ends or a CLS
        token, have no box).
    grids : tuple of TokenGrid
        The grids, in prompt order.
    family : str
        The ``model_type`` the layout was computed for.
    """

    size: tuple[int, int]
    n_tokens: int
    grids: tuple[TokenGrid, ...]
    family: str = ""

    @property
    def main(self) -> TokenGrid:
        """The finest grid (most cells; the first on a tie): the grid maps are shown on."""
        return max(self.grids, key=lambda g: g.rows * g.cols)

    def token_boxes(self):
        """``n_tokens x 4`` float array: each image token's box, cut to the image (NaN for tokens in no grid
        or wholly on the processor's padding)."""
        import numpy as np

        boxes = np.full((self.n_tokens, 4), np.nan)
        for grid in self.grids:
            boxes[list(grid.tokens)] = grid.cell_boxes()
        width, height = self.size
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        boxes[empty] = np.nan
        return boxes

    def grid_values(self, values):
        """Per-token values as one ``rows x cols`` array on :attr:`main` (rows top to bottom).

        A token of another grid gives each main cell the share of its value that its box overlaps the cell
        (so the mass of a map is kept; what falls outside the main grid's box is dropped). With one grid
        (LLaVA-1.5, Qwen2-VL) this is only a reshape.
        """
        import numpy as np

        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape[0] != self.n_tokens:
            raise ValueError(f"got {values.shape[0]} values for {self.n_tokens} image tokens")
        main = self.main
        out = values[list(main.tokens)].reshape(main.rows, main.cols).copy()
        for grid in self.grids:
            if grid is main:
                continue
            wy = _overlap_weights(grid.box[1], grid.box[3], grid.rows, main.box[1], main.box[3], main.rows)
            wx = _overlap_weights(grid.box[0], grid.box[2], grid.cols, main.box[0], main.box[2], main.cols)
            out += wy.T @ values[list(grid.tokens)].reshape(grid.rows, grid.cols) @ wx
        return out

    def to_json(self) -> dict:
        """``{"size", "n_tokens", "grids": [{"name", "rows", "cols", "box"}]}``."""
        return {"size": list(self.size), "n_tokens": self.n_tokens,
                "grids": [{"name": g.name, "rows": g.rows, "cols": g.cols, "box": [round(v, 3) for v in g.box]}
                          for g in self.grids]}


def _overlap_weights(a0: float, a1: float, n: int, b0: float, b1: float, m: int):
    """``n x m``: the share of source cell ``i`` (of ``n`` on ``[a0, a1]``) that lies in target cell ``j``."""
    import numpy as np

    sa = np.linspace(a0, a1, n + 1)
    sb = np.linspace(b0, b1, m + 1)
    lo = np.maximum(sa[:-1, None], sb[None, :-1])
    hi = np.minimum(sa[1:, None], sb[None, 1:])
    return np.clip(hi - lo, 0, None) / ((a1 - a0) / n)
