"""The diffusers video VAEs the driver runs: one adapter per class, picked by ``config.json``'s ``_class_name``.

    adapter = adapter_for(config)          # e.g. Wan(WanVAEConfig(...))
    adapter.decode_plan(21)                # [FrameStep(0, 1, "first"), FrameStep(1, 2, "steady"), …]

A new diffusers video VAE is one module here (its config, plans, tiling rule, latent scaling; see
:mod:`.base`) plus its torchax step builder in ``torchax_vae.tracing.models``; the driver does not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import UnsupportedModelError
from .base import DECODE, ENCODE, FIRST, STEADY, FrameStep, TilingSettings, VideoVAE
from .cogvideox import CogVideoX, CogVideoXVAEConfig
from .hunyuan_video import HunyuanVideo, HunyuanVideoVAEConfig
from .hunyuan_video15 import HunyuanVideo15, HunyuanVideo15VAEConfig
from .ltx2_video import LTX2Video, LTX2VideoVAEConfig
from .ltx_video import LTXVideo, LTXVideoVAEConfig
from .wan import Wan, WanVAEConfig

# diffusers class name -> adapter, in the order messages list them.
ADAPTERS: dict[str, type[VideoVAE]] = {cls.class_name: cls for cls in (CogVideoX, Wan, HunyuanVideo, HunyuanVideo15, LTXVideo, LTX2Video)}
_BY_CONFIG: dict[type, type[VideoVAE]] = {cls.config_class: cls for cls in ADAPTERS.values()}


def supported(names: list[str] | None = None) -> str:
  """``"AutoencoderKLCogVideoX, AutoencoderKLWan"``: for messages."""
  return ", ".join(names if names is not None else ADAPTERS)


def adapter_class(class_name: str, source: str = "config") -> type[VideoVAE]:
  """The adapter of a diffusers class; :class:`UnsupportedModelError` listing the adapters (a class
  without one runs through ``torchax_vae.runtime.generic``, which this torch-free loader does not serve)."""
  try:
    return ADAPTERS[class_name]
  except KeyError:
    raise UnsupportedModelError(
      f"{source}: _class_name={class_name!r} has no adapter (adapters: {supported()}) and no native port; "
      "torchax_vae.load runs every diffusers autoencoder class through its generic path"
    ) from None


def config_from_dict(raw: Mapping[str, Any], source: str = "config") -> Any:
  """The frozen config of a ``config.json`` dict, of the class its ``_class_name`` names.

  A dict without ``_class_name`` (written by hand; diffusers always writes it) is taken as the
  supported class whose config takes most of its keys, the first of :data:`ADAPTERS` on a tie
  (``AutoencoderKLCogVideoX``, which this package read such dicts as before it had other models).
  """
  class_name = raw.get("_class_name")
  if class_name is None:
    keys = {k for k in raw if not k.startswith("_")}
    taken = {name: len(keys & {f.name for f in dataclasses.fields(cls.config_class)}) for name, cls in ADAPTERS.items()}
    class_name = max(taken, key=taken.get)  # max keeps the first of equal counts
  return adapter_class(class_name, source).config_from_dict(raw, source)


def adapter_for(config: Any) -> VideoVAE:
  """The adapter instance for a config (one of the config classes here)."""
  try:
    return _BY_CONFIG[type(config)](config)
  except KeyError:
    raise TypeError(f"expected the config of a supported VAE ({supported()}), got {type(config).__name__}") from None


__all__ = [
  "ADAPTERS",
  "DECODE",
  "ENCODE",
  "FIRST",
  "STEADY",
  "CogVideoX",
  "CogVideoXVAEConfig",
  "FrameStep",
  "HunyuanVideo",
  "HunyuanVideoVAEConfig",
  "HunyuanVideo15",
  "HunyuanVideo15VAEConfig",
  "LTX2Video",
  "LTX2VideoVAEConfig",
  "LTXVideo",
  "LTXVideoVAEConfig",
  "TilingSettings",
  "VideoVAE",
  "Wan",
  "WanVAEConfig",
  "adapter_class",
  "adapter_for",
  "config_from_dict",
  "supported",
]
