"""Where spatial tiles start, how large they are, how far neighbours blend and what is kept of each.

A model adapter turns its ``enable_tiling`` settings into a :class:`TileGrid` (CogVideoX: overlap
factors; Wan: minimum size and stride); the driver walks the grid, blends and stitches, knowing no
model.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TileGrid:
  """One tiled walk, in diffusers' terms (``tiled_decode``/``tiled_encode``).

  ``tile``/``stride`` are in the input's units (latent pixels for decode), ``blend``/``keep``/``crop``
  in the output's (sample pixels for decode). Tiles start every ``stride`` and span up to ``tile``;
  each blends its first ``blend`` rows/cols into its upper/left neighbour, keeps its first ``keep``,
  and the stitched result is cut to ``crop`` where the model does (Wan), or left as stitched (``None``).
  """

  tile: tuple[int, int]  # (H, W) of a full tile, input units
  stride: tuple[int, int]  # distance between tile starts, input units
  blend: tuple[int, int]  # blend extent, output units
  keep: tuple[int, int]  # rows/cols kept of each tile, output units
  crop: tuple[int, int] | None = None  # (H, W) the stitched output is cut to, output units

  def __post_init__(self):
    if min(self.stride) < 1 or min(self.keep) < 1 or min(self.blend) < 0:
      raise ValueError(
        f"tiles too small for their overlap: tile {self.tile}, stride {self.stride}, blend {self.blend}, "
        f"kept {self.keep} (expected a positive stride and kept size, a blend >= 0)"
      )

  def tiles(self, height: int, width: int) -> list[list[tuple[slice, slice]]]:
    """Each tile's ``(rows, cols)`` in an input of ``(height, width)``, row by row as diffusers walks them."""
    rows = [slice(i, min(i + self.tile[0], height)) for i in range(0, height, self.stride[0])]
    cols = [slice(j, min(j + self.tile[1], width)) for j in range(0, width, self.stride[1])]
    return [[(r, c) for c in cols] for r in rows]
