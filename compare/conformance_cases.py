"""Small configs of every autoencoder class diffusers exports, for ``compare.conformance`` and the tests.

One :class:`Case` per class name (``diffusers.models.autoencoders``), each with the source of its config
(diffusers' own model tests, ``tests/models/autoencoders/test_models_*.py``, where they have one; else
the class's defaults shrunk, said so). A class diffusers exports that has no case here is a row of its
own in the table ("no small config"), so a class a later diffusers adds shows up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

IMAGE, VIDEO, AUDIO, OTHER = "image", "video", "audio", "other"


@dataclasses.dataclass(frozen=True)
class Case:
  """A class at a small config, and the inputs its decode / encode take."""

  config: dict[str, Any]  # constructor arguments (config.json without the _ keys)
  source: str  # where the config comes from
  kind: str  # IMAGE, VIDEO, AUDIO or OTHER
  decode_input: tuple[int, ...] | None  # latent shape decode takes; None: the class has no tensor decode
  encode_input: tuple[int, ...] | None  # sample shape encode takes; None: no tensor encode
  decode_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra keywords (num_frames=…)
  encode_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Video classes: a second latent frame count (decode_input's T is the first), for the programs-vs-T column.
  other_frames: int | None = None
  # enable_tiling(**tiling) that splits decode_input (and encode_input), for the tiled parity check.
  tiling: dict[str, Any] | None = None
  # What diffusers itself requires of this case (e.g. "tiling on"): the conformance run does the same.
  needs_tiling: bool = False
  note: str = ""  # what the row should say beyond the numbers


CASES: dict[str, Case] = {}


def _adapter_cases() -> dict[str, Case]:
  """The two classes with adapters, at the tiny configs their own tests use (``compare.checkpoints``)."""
  from .checkpoints import TINY, TINY_WAN_2_1

  wan = {k: v for k, v in TINY_WAN_2_1.items() if not k.startswith("_")}
  return {
    "AutoencoderKLCogVideoX": Case(
      config=TINY, source="compare/checkpoints.py TINY (every block kind, 2 blocks)", kind=VIDEO,
      decode_input=(2, 4, 3, 4, 6), encode_input=(2, 3, 9, 16, 24), other_frames=13,
      tiling={"tile_sample_min_height": 8, "tile_sample_min_width": 8}, note="adapter: 2-latent-frame steps, cache carried",
    ),
    "AutoencoderKLWan": Case(
      config=wan, source="compare/checkpoints.py TINY_WAN_2_1 (every Wan 2.1 block kind)", kind=VIDEO,
      decode_input=(2, 4, 3, 4, 6), encode_input=(2, 3, 9, 32, 48), other_frames=13,
      tiling={"tile_sample_min_height": 16, "tile_sample_min_width": 16, "tile_sample_stride_height": 8,
              "tile_sample_stride_width": 8}, note="adapter: 1-latent-frame steps, cache carried",
    ),
  }  # fmt: skip


CASES.update(_adapter_cases())
