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


def overlap_factor_grid(tile: tuple[int, int], out_tile: tuple[int, int], factors: tuple[float, float]) -> TileGrid:
  """The grid of diffusers' overlap-factor tiling (CogVideoX's and HunyuanVideo 1.5's ``tiled_decode`` /
  ``tiled_encode``): tiles of ``tile`` input pixels every ``int(tile * (1 - f))``, each blending
  ``int(out_tile * f)`` output pixels and keeping ``out_tile - blend``; the stitched result is not cut.
  ``out_tile``: the size diffusers assumes a full tile's output has (its other ``tile_*_min`` attribute)."""
  stride = tuple(int(t * (1 - f)) for t, f in zip(tile, factors))
  blend = tuple(int(o * f) for o, f in zip(out_tile, factors))
  keep = tuple(o - b for o, b in zip(out_tile, blend))
  return TileGrid(tile=tuple(tile), stride=stride, blend=blend, keep=keep)


@dataclasses.dataclass(frozen=True)
class TemporalTiles:
  """One temporal-tiled walk, in diffusers' terms (``_temporal_tiled_decode``/``_temporal_tiled_encode``
  of HunyuanVideo and LTX): overlapping frame tiles, each decoded (or encoded) on its own, no cache
  between them, then blended in time (``blend_t``) and joined.

  ``spans`` are the tiles' ``[start, end)`` in the input's frames (latent frames for decode), only
  those that reach the output: a tile whose kept frames would all lie past ``total`` changes nothing
  (blending looks back, never ahead), so it is not run. Of each tile's output every tile after the
  first drops its first ``drop`` frames (HunyuanVideo: its own causal start, which the previous tile
  covers; LTX drops its last instead, ``drop_last``), then
  its first ``blend`` frames fade in over the previous tile's last ones (that tile as blended
  itself, as diffusers blends in place); the first tile keeps ``keep_first`` frames, the others
  ``keep``; the joined frames are cut to ``total``.
  """

  spans: tuple[tuple[int, int], ...]
  drop: int  # output frames dropped from every tile after the first (from its head, or its tail with drop_last)
  blend: int  # output frames each later tile blends over its predecessor's tail
  keep_first: int  # output frames kept of the first tile
  keep: int  # output frames kept of each later tile
  total: int  # output frames of the whole walk
  drop_last: bool = False  # later tiles lose their last ``drop`` frames instead of their first (LTX's decode)

  @classmethod
  def over(
    cls,
    num_frames: int,
    *,
    tile: int,
    stride: int,
    out_frames,
    drop: int,
    blend: int,
    keep_first: int,
    keep: int,
    total: int,
    drop_last: bool = False,
  ) -> TemporalTiles:
    """Tiles of up to ``tile`` input frames starting every ``stride`` (``range(0, num_frames, stride)``,
    as diffusers walks them), cut after the last one that contributes; ``out_frames(n)``: output
    frames of a tile of ``n`` input frames."""
    if stride < 1 or keep < 1 or keep_first < 1 or blend < 0:
      raise ValueError(
        f"temporal tiles too small for their overlap: tile {tile}, stride {stride} input frames; "
        f"blend {blend}, kept {keep_first}/{keep} output frames (expected a positive stride and kept size)"
      )
    spans, produced = [], 0
    for start in range(0, num_frames, stride):
      if produced >= total:
        break
      end = min(start + tile, num_frames)
      kept = keep_first if not spans else keep
      produced += min(kept, max(out_frames(end - start) - (drop if spans else 0), 0))
      spans.append((start, end))
    return cls(tuple(spans), drop=drop, blend=blend, keep_first=keep_first, keep=keep, total=total, drop_last=drop_last)

  def lengths(self) -> list[int]:
    """The distinct tile lengths (input frames), longest first: one program set each."""
    return sorted({end - start for start, end in self.spans}, reverse=True)
