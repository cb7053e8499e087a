"""The porting reference for the VAEs: diffusers <-> native_flax, generated from the code.

    python -m compare.reference            # live run (tiny configs, fp32, CPU), writes docs/port_reference.md
    python -m compare.reference --check    # exit 1 if the committed doc's mapping is stale (no live run)

The document has these parts, in this order:

1. every diffusers module class of the CogVideoX VAE with its ``file:line`` (relative to
   site-packages), its NNX counterpart's ``file:line`` and the fp32 max abs error of that class
   against diffusers, measured live on a tiny configuration with random weights copied through
   ``native_flax.convert``; plus the whole-model decode error on ``compare.checkpoints.TINY``;
2. the layout-rule table (``convert.describe_rules()``), shared by both ports;
3. notes on the CogVideoX translations that are not line-for-line, with the lines they refer to;
4. every weight key of the real CogVideoX-2b config (``convert.key_mapping``; no weights needed);
5. to 8. the same for the Wan VAE (``AutoencoderKLWan``): its classes and errors (the whole model on
   ``TINY_WAN_2_1`` and ``TINY_WAN_2_2``), its translation notes, and every weight key of the real
   Wan 2.1 and Wan 2.2 (TI2V-5B) configs.

Everything but the measured numbers is deterministic: :func:`render` with ``errors=None`` produces the
document with every measured cell set to :data:`NOT_MEASURED`, and :func:`mask_errors` turns a
generated document into exactly that, which is what ``tests/test_reference.py`` compares.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "port_reference.md"
NOT_MEASURED = "—"
WHOLE_MODEL = "whole-model decode"
# An error cell: two significant digits, exponent form (``f"{err:.1e}"``), e.g. ``1.4e-06``.
ERROR_RE = re.compile(r"(?<![\w.])(?:\d\.\de[+-]\d{2}|nan|inf)(?![\w.])")

# The diffusers module classes of the VAE, smallest to largest (the NNX classes carry the same names).
CLASSES = (
  "CogVideoXSafeConv3d",
  "CogVideoXCausalConv3d",
  "CogVideoXSpatialNorm3D",
  "CogVideoXResnetBlock3D",
  "CogVideoXDownsample3D",
  "CogVideoXUpsample3D",
  "CogVideoXDownBlock3D",
  "CogVideoXMidBlock3D",
  "CogVideoXUpBlock3D",
  "CogVideoXEncoder3D",
  "CogVideoXDecoder3D",
  "AutoencoderKLCogVideoX",
)


# ----------------------------------------------------------------------------------------------
# Source locations
# ----------------------------------------------------------------------------------------------


def _site_packages() -> Path:
  import diffusers

  return Path(diffusers.__file__).resolve().parents[1]


def _relative(path: str) -> str:
  resolved = Path(path).resolve()
  for root in (_site_packages(), REPO):  # site-packages first: the venv may live inside the repo
    if resolved.is_relative_to(root):
      return resolved.relative_to(root).as_posix()
  return resolved.as_posix()


def location(obj: Any, needle: str | None = None) -> str:
  """``file:line`` of a class or function (its ``def``/``class`` line, or the first line of its
  source containing ``needle``), relative to the repo or to site-packages."""
  obj = inspect.unwrap(obj)  # e.g. diffusers' @register_to_config on __init__
  lines, start = inspect.getsourcelines(obj)
  line = start
  if needle is not None:
    hits = [start + i for i, text in enumerate(lines) if needle in text]
    if not hits:
      raise ValueError(f"{needle!r} not in the source of {obj.__qualname__}")
    line = hits[0]
  return f"{_relative(inspect.getsourcefile(obj))}:{line}"


def torch_classes() -> dict[str, type]:
  from diffusers import AutoencoderKLCogVideoX
  from diffusers.models.autoencoders import autoencoder_kl_cogvideox as dm
  from diffusers.models.downsampling import CogVideoXDownsample3D
  from diffusers.models.upsampling import CogVideoXUpsample3D

  found = {name: getattr(dm, name, None) for name in CLASSES}
  found.update(
    CogVideoXDownsample3D=CogVideoXDownsample3D,
    CogVideoXUpsample3D=CogVideoXUpsample3D,
    AutoencoderKLCogVideoX=AutoencoderKLCogVideoX,
  )
  return found


def nnx_classes() -> dict[str, type]:
  from native_flax import autoencoder_kl_cogvideox as nf

  return {name: getattr(nf, name) for name in CLASSES}


# The diffusers module classes of the Wan VAE, smallest to largest (same names in the port).
WAN_CLASSES = (
  "AvgDown3D",
  "DupUp3D",
  "WanCausalConv3d",
  "WanRMS_norm",
  "WanUpsample",
  "WanResample",
  "WanResidualBlock",
  "WanAttentionBlock",
  "WanMidBlock",
  "WanResidualDownBlock",
  "WanEncoder3d",
  "WanResidualUpBlock",
  "WanUpBlock",
  "WanDecoder3d",
  "AutoencoderKLWan",
)
WAN_WHOLE_MODELS = {"2.1": "whole-model decode (Wan 2.1)", "2.2": "whole-model decode (Wan 2.2)"}


def wan_torch_classes() -> dict[str, type]:
  from diffusers.models.autoencoders import autoencoder_kl_wan as dm

  return {name: getattr(dm, name) for name in WAN_CLASSES}


def wan_nnx_classes() -> dict[str, type]:
  from native_flax import autoencoder_kl_wan as nf

  return {name: getattr(nf, name) for name in WAN_CLASSES}


# ----------------------------------------------------------------------------------------------
# Live measurement: each class against diffusers on the same (random) weights
# ----------------------------------------------------------------------------------------------

# Tiny programs: LLVM's optimisation passes cost more than they save (as in tests/test_native_modules.py).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _randn(*shape: int, seed: int = 0):
  import numpy as np

  return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def perturb(module, seed: int):
  """Default init plus noise on 1-D parameters (norm scale/bias, conv biases) and Wan's RMS-norm ``gamma``
  (all ones at init): nothing is trivially 0 or 1."""
  import torch

  gen = torch.Generator().manual_seed(seed + 1000)
  with torch.no_grad():
    for name, p in sorted(module.named_parameters()):
      if p.ndim == 1 or name.endswith("gamma"):
        p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return module.eval()


def state_numpy(module) -> dict:
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def build(torch_cls, nnx_cls, *args, seed: int = 0, **kwargs):
  """(diffusers module, NNX module built with eval_shape and filled through convert's layout rules)."""
  import torch
  from flax import nnx

  from native_flax import convert

  torch.manual_seed(seed)
  ref = perturb(torch_cls(*args, **kwargs), seed)
  ours = nnx.eval_shape(lambda: nnx_cls(*args, **kwargs, rngs=nnx.Rngs(seed)))
  return ref, convert.load_into(ours, state_numpy(ref), source=torch_cls.__name__)


def _run(module, *args, method: str | Callable = "__call__"):
  """``module.method(*args)`` as one jitted program (as the driver runs the modules)."""
  import jax
  from flax import nnx

  graphdef, state = nnx.split(module)

  def program(st, *a):
    m = nnx.merge(graphdef, st)
    return method(m, *a) if callable(method) else getattr(m, method)(*a)

  return jax.jit(program, compiler_options=FAST_COMPILE)(state, *args)


def _cl(x):
  """(B, C, T, H, W) numpy -> (B, T, H, W, C) jax."""
  import jax.numpy as jnp
  import numpy as np

  return jnp.asarray(np.moveaxis(x, 1, -1))


def _pt(x):
  import numpy as np
  import torch

  return torch.from_numpy(np.ascontiguousarray(x))


def _err(ours, ref) -> float:
  import numpy as np

  ours_cf = np.moveaxis(np.asarray(ours), -1, 1).astype(np.float64)
  ref = ref.detach().numpy()
  if ours_cf.shape != ref.shape:
    raise AssertionError(f"shape mismatch: {ours_cf.shape} vs {ref.shape}")
  return float(np.abs(ours_cf - ref).max())


def _steps(ref, ours, xs, zqs=None, *, call: str = "block") -> float:
  """Two steps on each side, the second on the cache each side returned; worst output error.

  ``call``: the signature, ``"block"`` ``(x, temb, zq, conv_cache)``, ``"coder"`` ``(x, temb,
  conv_cache)`` or ``"conv"`` ``(x, conv_cache)``; ``temb`` is ``None`` (the VAE has none).
  """
  import torch

  worst, caches = 0.0, (None, None)
  for i, x in enumerate(xs):
    z = None if zqs is None else zqs[i]
    with torch.no_grad():
      if call == "block":
        r, rc = ref(_pt(x), None, None if z is None else _pt(z), conv_cache=caches[0])
      else:
        r, rc = ref(_pt(x), conv_cache=caches[0])
    if call == "block":
      o, oc = _run(ours, _cl(x), None, None if z is None else _cl(z), caches[1])
    elif call == "coder":
      o, oc = _run(ours, _cl(x), None, caches[1])
    else:
      o, oc = _run(ours, _cl(x), caches[1])
    worst = max(worst, _err(o, r))
    caches = (rc, oc)
  return worst


def _one(ref, ours, *inputs) -> float:
  import torch

  with torch.no_grad():
    r = ref(*map(_pt, inputs))
  o = _run(ours, *map(_cl, inputs))
  if isinstance(r, tuple):  # (output, cache)
    r, o = r[0], o[0]
  return _err(o, r)


def _safe_conv3d(t, n) -> float:
  ref, ours = build(t, n, 4, 6, kernel_size=3, padding=1)
  return _one(ref, ours, _randn(2, 4, 3, 5, 6, seed=1))


def _causal_conv3d(t, n) -> float:
  ref, ours = build(t, n, 4, 6, kernel_size=3, pad_mode="first")
  return _steps(ref, ours, [_randn(2, 4, 3, 5, 6, seed=1), _randn(2, 4, 2, 5, 6, seed=2)], call="conv")


def _spatial_norm3d(t, n) -> float:
  ref, ours = build(t, n, 8, 4, groups=4)
  odd = _one(ref, ours, _randn(2, 8, 5, 8, 6, seed=3), _randn(2, 4, 3, 4, 3, seed=4))
  ratio = _one(ref, ours, _randn(2, 8, 6, 10, 7, seed=5), _randn(2, 4, 4, 3, 3, seed=6))
  return max(odd, ratio)


def _resnet_block3d(t, n) -> float:
  ref, ours = build(t, n, in_channels=8, out_channels=16, temb_channels=0, groups=4, spatial_norm_dim=4)
  xs = [_randn(2, 8, 3, 6, 4, seed=10), _randn(2, 8, 2, 6, 4, seed=11)]
  zs = [_randn(2, 4, 3, 3, 2, seed=20), _randn(2, 4, 2, 3, 2, seed=21)]
  return _steps(ref, ours, xs, zs)


def _downsample3d(t, n) -> float:
  ref, ours = build(t, n, 8, 12, compress_time=True)
  return max(_one(ref, ours, _randn(2, 8, frames, 7, 6, seed=frames)) for frames in (4, 5))


def _upsample3d(t, n) -> float:
  ref, ours = build(t, n, 8, 12, compress_time=True)
  return max(_one(ref, ours, _randn(2, 8, frames, 3, 4, seed=frames)) for frames in (2, 3))


def _down_block3d(t, n) -> float:
  ref, ours = build(
    t, n, 8, 16, temb_channels=0, num_layers=2, resnet_groups=4, add_downsample=True, compress_time=True
  )
  return _steps(ref, ours, [_randn(1, 8, 5, 8, 6, seed=1), _randn(1, 8, 4, 8, 6, seed=2)])


def _mid_block3d(t, n) -> float:
  ref, ours = build(t, n, 16, temb_channels=0, num_layers=2, resnet_groups=4, spatial_norm_dim=4)
  xs = [_randn(1, 16, 3, 4, 6, seed=1), _randn(1, 16, 2, 4, 6, seed=2)]
  zs = [_randn(1, 4, 3, 4, 6, seed=3), _randn(1, 4, 2, 4, 6, seed=4)]
  return _steps(ref, ours, xs, zs)


def _up_block3d(t, n) -> float:
  ref, ours = build(
    t, n, 16, 8, temb_channels=0, num_layers=2, resnet_groups=4, spatial_norm_dim=4, compress_time=True
  )
  xs = [_randn(1, 16, 5, 4, 6, seed=1), _randn(1, 16, 4, 4, 6, seed=2)]
  zs = [_randn(1, 4, 3, 2, 3, seed=3), _randn(1, 4, 2, 2, 3, seed=4)]
  return _steps(ref, ours, xs, zs)


CODER = dict(block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4, norm_eps=1e-5)


def _encoder3d(t, n) -> float:
  import numpy as np

  ref, ours = build(t, n, in_channels=3, out_channels=4, down_block_types=("CogVideoXDownBlock3D",) * 3, **CODER)
  xs = [np.tanh(_randn(1, 3, 9, 16, 12, seed=1)), np.tanh(_randn(1, 3, 8, 16, 12, seed=2))]
  return _steps(ref, ours, xs, call="coder")


def _decoder3d(t, n) -> float:
  ref, ours = build(t, n, in_channels=4, out_channels=3, up_block_types=("CogVideoXUpBlock3D",) * 3, **CODER)
  return _steps(ref, ours, [_randn(1, 4, 3, 4, 3, seed=1), _randn(1, 4, 2, 4, 3, seed=2)], call="coder")


def _tiny_pair(overrides: dict | None = None, seed: int = 0):
  import torch
  from diffusers import AutoencoderKLCogVideoX

  from compare.checkpoints import TINY
  from native_flax import convert
  from torchax_vae.core.checkpoint import CogVideoXVAEConfig

  raw = dict(TINY, **(overrides or {}))
  torch.manual_seed(seed)
  ref = perturb(AutoencoderKLCogVideoX(**raw), seed)
  return ref, convert.load_model(state_numpy(ref), CogVideoXVAEConfig.from_dict(raw), source="tiny")


QUANT = {"latent_channels": 3, "use_quant_conv": True, "use_post_quant_conv": True}


def _autoencoder(t, n) -> float:
  import numpy as np
  import torch

  ref, ours = _tiny_pair(QUANT, seed=1)
  z, x = _randn(1, 3, 3, 4, 4, seed=5), np.tanh(_randn(1, 3, 9, 8, 8, seed=6))
  with torch.no_grad():
    video = ref.decode(_pt(z)).sample
    moments = ref.encode(_pt(x)).latent_dist.parameters
  ours_video = _run(ours, _cl(z), method="decode")
  ours_moments = _run(ours, _cl(x), method=lambda m, a: m.encode(a).parameters)
  return max(_err(ours_video, video), _err(ours_moments, moments))


def _whole_model_decode() -> float:
  import torch

  ref, ours = _tiny_pair()
  z = _randn(1, 4, 5, 4, 6, seed=5)
  with torch.no_grad():
    video = ref.decode(_pt(z)).sample
  return _err(_run(ours, _cl(z), method="decode"), video)


@dataclass(frozen=True)
class Case:
  description: str
  measure: Callable[..., float]


# What each class is measured on (the description is rendered next to the number).
CASES: dict[str, Case] = {
  "CogVideoXSafeConv3d": Case("4→6, k=3, padding 1; x (2, 4, 3, 5, 6)", _safe_conv3d),
  "CogVideoXCausalConv3d": Case("4→6, k=3, pad_mode first; T=3, then T=2 on the cache", _causal_conv3d),
  "CogVideoXSpatialNorm3D": Case(
    "f 8 ch, zq 4 ch, 4 groups; f T,H,W=(5,8,6) zq (3,4,3) (odd T); f (6,10,7) zq (4,3,3) (non-integer ratios)",
    _spatial_norm3d,
  ),
  "CogVideoXResnetBlock3D": Case(
    "8→16 (1×1×1 shortcut), spatial norm zq 4 ch, 4 groups; T=3, then T=2 on the cache", _resnet_block3d
  ),
  "CogVideoXDownsample3D": Case("8→12, compress_time; T=4 and T=5, H=7 (odd)", _downsample3d),
  "CogVideoXUpsample3D": Case("8→12, compress_time; T=2 and T=3", _upsample3d),
  "CogVideoXDownBlock3D": Case(
    "8→16, 2 resnets, 4 groups, downsample with compress_time; T=5, then T=4 on the cache", _down_block3d
  ),
  "CogVideoXMidBlock3D": Case("16 ch, 2 resnets, spatial norm zq 4 ch; T=3, then T=2 on the cache", _mid_block3d),
  "CogVideoXUpBlock3D": Case(
    "16→8, 2 resnets, spatial norm zq 4 ch, upsample with compress_time; T=5, then T=4 on the cache", _up_block3d
  ),
  "CogVideoXEncoder3D": Case(
    "blocks (8, 16, 16), 2 layers, 4 groups, eps 1e-5 (2 time levels); F=9, then F=8 on the cache", _encoder3d
  ),
  "CogVideoXDecoder3D": Case("same config; latents T=3, then T=2 on the cache", _decoder3d),
  "AutoencoderKLCogVideoX": Case(
    "TINY + latent_channels=3 and both quant convs; decode T=3 and encode F=9 (moments)", _autoencoder
  ),
}
WHOLE_MODEL_CASE = Case(
  "`compare.checkpoints.TINY` (blocks (32, 64), latent 4 ch); `decode` of z (1, 4, 5, 4, 6): "
  "frame steps of 3 then 2 latent frames (cache carried) → 9 + 8 video frames",
  lambda *_: _whole_model_decode(),
)


# --- Wan ---------------------------------------------------------------------------------------


def _wan_walk(ref, ours, chunks, first_chunk: bool = False) -> float:
  """Chunks through diffusers (one ``feat_cache`` list, a fresh ``feat_idx`` each, as ``_decode``) and
  the port (its returned cache); the worst output error over the walk."""
  import torch

  feat_cache, cache, worst = [None] * 64, None, 0.0
  for i, chunk in enumerate(chunks):
    kw = {"first_chunk": i == 0} if first_chunk else {}
    with torch.no_grad():
      r = ref(_pt(chunk), feat_cache=feat_cache, feat_idx=[0], **kw)
    if cache is None:
      o, cache = _run(ours, _cl(chunk), method=lambda m, x: m(x, None, **kw))
    else:
      o, cache = _run(ours, _cl(chunk), cache, method=lambda m, x, c: m(x, c, **kw))
    worst = max(worst, _err(o, r))
  return worst


def _wan_plain(t, n, *inputs) -> float:
  """A parameter-free module (no rngs) on the same inputs."""
  import torch

  with torch.no_grad():
    r = t(*map(_pt, inputs))
  return _err(_run(n, *map(_cl, inputs)), r)


def _wan_avg_down(t, n) -> float:
  return max(_wan_plain(t(4, 8, 2, 2), n(4, 8, 2, 2), _randn(2, 4, frames, 6, 8, seed=frames)) for frames in (4, 5))


def _wan_dup_up(t, n) -> float:
  import torch

  ref, ours, x = t(8, 4, 2, 2), n(8, 4, 2, 2), _randn(2, 8, 2, 3, 4, seed=1)
  worst = 0.0
  for first in (False, True):
    with torch.no_grad():
      r = ref(_pt(x), first_chunk=first)
    worst = max(worst, _err(_run(ours, _cl(x), method=lambda m, a: m(a, first)), r))
  return worst


def _wan_causal_conv(t, n) -> float:
  import torch

  ref, ours = build(t, n, 4, 6, 3, padding=1)
  x, worst = _randn(2, 4, 3, 5, 7, seed=1), 0.0
  for frames in (0, 1, 2):
    cache = _randn(2, 4, frames, 5, 7, seed=2) if frames else None
    with torch.no_grad():
      r = ref(_pt(x), None if cache is None else _pt(cache))
    o = _run(ours, _cl(x), method=lambda m, a: m(a, None if cache is None else _cl(cache)))
    worst = max(worst, _err(o, r))
  return worst


def _wan_rms_norm(t, n) -> float:
  worst = 0.0
  for images, x in ((False, _randn(2, 6, 3, 5, 7, seed=1) * 3), (True, _randn(2, 6, 5, 7, seed=2) * 3)):
    ref, ours = build(t, lambda dim, images, rngs: n(dim, images=images), 6, images=images)
    worst = max(worst, _one(ref, ours, x))
  return worst


def _wan_upsample(t, n) -> float:
  return _wan_plain(t(scale_factor=(2.0, 2.0), mode="nearest-exact"), n(), _randn(2, 4, 5, 7, seed=1))


def _wan_resample(t, n) -> float:
  worst = 0.0
  for mode in ("upsample2d", "upsample3d", "downsample2d", "downsample3d"):
    ref, ours = build(t, n, 4, mode)
    frames = (1, 1, 2) if mode.startswith("up") else (1, 4, 4)
    worst = max(worst, _wan_walk(ref, ours, [_randn(2, 4, f, 6, 7, seed=f + i) for i, f in enumerate(frames)]))
  return worst


def _wan_residual_block(t, n) -> float:
  ref, ours = build(t, n, 4, 6)
  return _wan_walk(ref, ours, [_randn(2, 4, f, 5, 6, seed=f) for f in (1, 4, 4)])


def _wan_attention(t, n) -> float:
  ref, ours = build(t, n, 8)
  return _one(ref, ours, _randn(2, 8, 2, 5, 6, seed=1))


def _wan_mid_block(t, n) -> float:
  ref, ours = build(t, n, 8)
  return _wan_walk(ref, ours, [_randn(1, 8, 1, 4, 5, seed=i) for i in range(3)])


def _wan_residual_down_block(t, n) -> float:
  ref, ours = build(t, n, 4, 8, 0.0, 2, temperal_downsample=True, down_flag=True)
  return _wan_walk(ref, ours, [_randn(2, 4, f, 6, 8, seed=f) for f in (1, 4, 4)])


def _wan_residual_up_block(t, n) -> float:
  ref, ours = build(t, n, 8, 4, 1, temperal_upsample=True, up_flag=True)
  return _wan_walk(ref, ours, [_randn(2, 8, 1, 3, 4, seed=i) for i in range(3)], first_chunk=True)


def _wan_up_block(t, n) -> float:
  ref, ours = build(t, n, 8, 4, 1, upsample_mode="upsample3d")
  return _wan_walk(ref, ours, [_randn(2, 8, 1, 3, 4, seed=i) for i in range(3)], first_chunk=True)


WAN_CODER = dict(dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1)


def _wan_encoder(t, n) -> float:
  import numpy as np

  worst = 0.0
  for residual in (False, True):
    ref, ours = build(t, n, in_channels=3, temperal_downsample=[False, True, True], is_residual=residual, **WAN_CODER)
    worst = max(worst, _wan_walk(ref, ours, [np.tanh(_randn(1, 3, f, 16, 24, seed=f)) for f in (1, 4, 4)]))
  return worst


def _wan_decoder(t, n) -> float:
  worst = 0.0
  for residual in (False, True):
    ref, ours = build(t, n, temperal_upsample=[True, True, False], is_residual=residual, **WAN_CODER)
    chunks = [_randn(1, 4, 1, 2, 3, seed=i) for i in range(3)]
    worst = max(worst, _wan_walk(ref, ours, chunks, first_chunk=True))
  return worst


def _wan_tiny_pair(variant: str, seed: int = 0):
  import torch
  from diffusers import AutoencoderKLWan

  from compare.checkpoints import TINY_WAN_2_1, TINY_WAN_2_2
  from native_flax import convert
  from torchax_vae.core.checkpoint import WanVAEConfig

  raw = dict(TINY_WAN_2_1 if variant == "2.1" else TINY_WAN_2_2)
  raw.pop("_class_name")
  torch.manual_seed(seed)
  ref = perturb(AutoencoderKLWan(**raw), seed)
  return ref, convert.load_model(state_numpy(ref), WanVAEConfig.from_dict(raw), source=f"tiny Wan {variant}")


def _wan_autoencoder(t, n) -> float:
  """Both versions: ``decode`` (unpatchify, clamp) and the encoder's moments (patchify), whole loops."""
  import numpy as np
  import torch

  worst = 0.0
  for variant in ("2.1", "2.2"):
    ref, ours = _wan_tiny_pair(variant, seed=1)
    scale = 8 if variant == "2.1" else 16
    z, x = _randn(1, 4, 2, 3, 4, seed=5), np.tanh(_randn(1, 3, 5, 3 * scale, 4 * scale, seed=6))
    with torch.no_grad():
      video = ref.decode(_pt(z)).sample
      moments = ref.encode(_pt(x)).latent_dist.parameters
    worst = max(worst, _err(_run(ours, _cl(z), method="decode"), video), _err(_run(ours, _cl(x), method="encode"), moments))
  return worst


def _wan_whole_model_decode(variant: str) -> float:
  import torch

  ref, ours = _wan_tiny_pair(variant)
  z = _randn(1, 4, 5, 4, 6, seed=5)
  with torch.no_grad():
    video = ref.decode(_pt(z)).sample
  return _err(_run(ours, _cl(z), method="decode"), video)


WAN_CASES: dict[str, Case] = {
  "AvgDown3D": Case("4→8, factor_t 2, factor_s 2; T=4 and T=5 (zero frame in front)", _wan_avg_down),
  "DupUp3D": Case("8→4, factor_t 2, factor_s 2; first_chunk False and True", _wan_dup_up),
  "WanCausalConv3d": Case("4→6, k=3, padding 1; cache of 0, 1 and 2 frames", _wan_causal_conv),
  "WanRMS_norm": Case("6 ch; images=False (B, C, T, H, W) and images=True (N, C, H, W)", _wan_rms_norm),
  "WanUpsample": Case("scale (2, 2), nearest-exact; (2, 4, 5, 7)", _wan_upsample),
  "WanResample": Case(
    "4 ch, all four modes; up: chunks of 1, 1, 2 frames, down: 1, 4, 4 (first chunk, \"Rep\"/1-frame cache, steady)",
    _wan_resample,
  ),
  "WanResidualBlock": Case("4→6 (1×1×1 shortcut); chunks of 1, 4, 4 frames", _wan_residual_block),
  "WanAttentionBlock": Case("8 ch; (2, 8, 2, 5, 6)", _wan_attention),
  "WanMidBlock": Case("8 ch, 1 attention; three 1-frame chunks", _wan_mid_block),
  "WanResidualDownBlock": Case("4→8, 2 resnets, temporal + spatial down; chunks of 1, 4, 4", _wan_residual_down_block),
  "WanEncoder3d": Case("dim 8, mult (1, 2, 2, 2), 1 res block, 2.1 and 2.2 (residual); F = 1, 4, 4", _wan_encoder),
  "WanResidualUpBlock": Case("8→4, 1 res block, temporal + spatial up; three 1-frame chunks", _wan_residual_up_block),
  "WanUpBlock": Case("8→4, 1 res block, upsample3d; three 1-frame chunks", _wan_up_block),
  "WanDecoder3d": Case("same configs; three 1-latent-frame chunks, first_chunk on the first", _wan_decoder),
  "AutoencoderKLWan": Case(
    "TINY_WAN_2_1 and TINY_WAN_2_2: `decode` of z (1, 4, 2, 3, 4), encoder moments of F=5", _wan_autoencoder
  ),
}
WAN_WHOLE_MODEL_CASES = {
  variant: Case(
    f"`compare.checkpoints.TINY_WAN_{variant.replace('.', '_')}`; `decode` of z (1, 4, 5, 4, 6): 5 one-frame steps "
    "(cache carried) → 1 + 4·4 video frames" + (", unpatchified" if variant == "2.2" else ""),
    lambda *_, v=variant: _wan_whole_model_decode(v),
  )
  for variant in WAN_WHOLE_MODELS
}


def measure(log=print) -> dict[str, float]:
  """fp32 max abs error of every class (and the whole-model decodes) against diffusers, on CPU."""
  import jax

  errors = {}
  with jax.default_matmul_precision("highest"):
    for classes, cases, torch_cls, nnx_cls in (
      (CLASSES, CASES, torch_classes(), nnx_classes()),
      (WAN_CLASSES, WAN_CASES, wan_torch_classes(), wan_nnx_classes()),
    ):
      for name in classes:
        errors[name] = cases[name].measure(torch_cls[name], nnx_cls[name])
        log(f"  {name:<28} {errors[name]:.1e}")
    errors[WHOLE_MODEL] = WHOLE_MODEL_CASE.measure()
    for variant, name in WAN_WHOLE_MODELS.items():
      errors[name] = WAN_WHOLE_MODEL_CASES[variant].measure()
    for name in (WHOLE_MODEL, *WAN_WHOLE_MODELS.values()):
      log(f"  {name:<28} {errors[name]:.1e}")
  return errors


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def format_error(err: float | None) -> str:
  return NOT_MEASURED if err is None else f"{err:.1e}"


def mask_errors(text: str) -> str:
  """A generated document with every measured number replaced by :data:`NOT_MEASURED`."""
  return ERROR_RE.sub(NOT_MEASURED, text)


def parse_errors(text: str) -> dict[str, float]:
  """``{class name or WHOLE_MODEL: error}`` from a generated document's measured cells."""
  found = {}
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
    if len(cells) >= 2 and ERROR_RE.fullmatch(cells[-1]):
      found[cells[0].strip("`")] = float(cells[-1])
  return found


def _cell(value: Any) -> str:
  return str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
  return out


def _shape(shape: tuple[int, ...]) -> str:
  return str(tuple(shape))


def _real_config():
  from compare.checkpoints import COGVIDEOX_2B
  from torchax_vae.core.checkpoint import CogVideoXVAEConfig

  return CogVideoXVAEConfig.from_dict(COGVIDEOX_2B)


def _instance_counts(model) -> dict[type, int]:
  from flax import nnx

  counts: dict[type, int] = {}
  for _, module in nnx.iter_modules(model):
    counts[type(module)] = counts.get(type(module), 0) + 1
  return counts


def _loc(obj: Any, needle: str | None = None) -> str:
  """``file:line`` in backticks, for the notes."""
  return f"`{location(obj, needle)}`"


def _numbered(notes: list[tuple[str, str]]) -> list[str]:
  """``**1. Title.** body`` paragraphs."""
  lines = []
  for i, (title, body) in enumerate(notes, 1):
    lines += [f"**{i}. {title}.** {body}", ""]
  return lines


def _notes() -> list[str]:
  from diffusers.models.autoencoders import vae as dvae

  from native_flax import autoencoder_kl_cogvideox as nf
  from native_flax import backend

  t = torch_classes()
  dm_causal, dm_norm, dm_safe = t["CogVideoXCausalConv3d"], t["CogVideoXSpatialNorm3D"], t["CogVideoXSafeConv3d"]
  dm_vae, dm_enc = t["AutoencoderKLCogVideoX"], t["CogVideoXEncoder3D"]

  loc = _loc

  notes = [
    (
      "Causal padding: the first frame repeated",
      "diffusers `CogVideoXCausalConv3d.fake_context_parallel_forward` "
      f"({loc(dm_causal.fake_context_parallel_forward)}): "
      "unless `pad_mode == \"replicate\"` (the VAE passes `\"first\"`, which takes the same branch as the default "
      "`\"constant\"`), a conv with time kernel `k_t > 1` gets `conv_cache` prepended on time or, on the first step, "
      "`k_t - 1` copies of `inputs[:, :, :1]`; H and W are zero-padded by the Conv3d itself with "
      "`padding=(0, width_pad, height_pad)` (H padded by `width_pad`, W by `height_pad`: equal for square kernels, "
      "mirrored as is). Stride 1 in time, so T frames in give T frames out. "
      "Port: `jnp.repeat(inputs[:, :1], k - 1, axis=1)` + concatenate "
      f"({loc(nf.CogVideoXCausalConv3d.fake_context_parallel_forward)}).",
    ),
    (
      "The conv cache is an explicit pytree; `None` for time-kernel-1 convs",
      f"Both sides return `(output, new_cache)`; the cache is a nested dict with diffusers' keys (`conv_in`, "
      "`down_block_i`/`up_block_i`, `mid_block`, `resnet_i`, `norm1`/`norm2`, `conv1`/`conv2`, `conv_shortcut`, "
      "`conv_y`/`conv_b`, `norm_out`, `conv_out`) whose leaves are the last `k_t - 1` frames of the *padded* input, "
      f"`inputs[:, :, -k_t + 1:]` ({loc(dm_causal.forward, 'conv_cache = inputs')}); in the port channels-last "
      "`(B, k_t - 1, H, W, C)`, so one frame step is a pure function `(params, x, cache) -> (y, cache)` "
      f"(`native_flax.backend.make_steps`, {loc(backend.make_steps)}) that the shared driver compiles once for the "
      "first step (cache `None`) and once for the steady steps. "
      "For `k_t == 1` (SpatialNorm3D's 1×1×1 `conv_y`/`conv_b`) diffusers' slice is `[-0:]`, the *whole* input, "
      "stored but never read (a 1-frame kernel takes no prefix); the port returns `None` there "
      f"({loc(nf.CogVideoXCausalConv3d.__call__, 'time_kernel_size == 1')}) instead of carrying a full-resolution "
      "tensor between steps. Outputs are unaffected; the cache trees differ only at those leaves. "
      "Up/downsamplers, `conv_shortcut` as a 1×1×1 SafeConv3d and the quant convs keep no cache.",
    ),
    (
      "Nearest-neighbour resizing in SpatialNorm3D",
      "diffusers resizes `zq` to `f`'s (T, H, W) with `F.interpolate(size=...)` "
      f"({loc(dm_norm.forward, 'F.interpolate')}), mode `\"nearest\"`: PyTorch's source index per axis is the "
      "identity for equal sizes, `dst >> 1` for exactly 2×, "
      "else `min(floor(dst * (float32)(in / out)), in - 1)` (not `\"nearest-exact\"`'s centre rounding). "
      f"Port: `_nearest_source_indices` ({loc(nf._nearest_source_indices)}) computes these indices with numpy at trace "
      "time (shapes are static) and `interpolate_nearest` resizes one axis at a time (`jnp.repeat` for integer "
      "upscales, else `jnp.take`), so W is never merged with another axis. For odd `T > 1` of `f`, the first frame "
      "of `zq` is resized on its own to `(1, H, W)` and the rest to `(T - 1, H, W)` (latent frame 0 ↔ video frame 0 "
      f"of the causal time compression; {loc(nf.CogVideoXSpatialNorm3D.__call__, 'frames % 2 == 1')}); even T "
      "or T == 1: one resize of all three axes.",
    ),
    (
      "Time up/downsampling (`compress_time`)",
      "Block `i` compresses time iff `i < log2(temporal_compression_ratio)` "
      f"({loc(dm_enc.__init__, 'compress_time =')}): "
      "the first two blocks for ratio 4. `CogVideoXDownsample3D`: odd T keeps frame 0 and averages frames 1.. in "
      "pairs (`F.avg_pool1d(k=2, s=2)`, T → 1 + (T - 1) // 2), even T averages pairs (T → T / 2); "
      "diffusers permutes "
      "to `(B·H·W, C, T)` for the pool, the port takes even/odd strided slices of the T axis and averages them "
      f"(`_avg_pool_time`, {loc(nf._avg_pool_time)}). Then H and W are zero-padded by one at the end and a 3×3 "
      "stride-2 Conv2d (padding 0) runs per frame. `CogVideoXUpsample3D`: odd `T > 1` upsamples frame 0 2× in H, W "
      "only and the rest 2× in T, H, W (T → 2T - 1); even `T > 1` doubles all three; `T == 1` (or no "
      "`compress_time`) only H, W. Nearest 2× is `jnp.repeat(x, 2, axis)` per axis (source index `dst >> 1`), then a "
      "3×3 Conv2d (padding 1) per frame. So with ratio 4 a first decode step of 3 latent frames gives "
      "3 → 5 → 9 video frames and later steps of 2 give 2 → 4 → 8; encoding, 9 → 5 → 3 and 8 → 4 → 2.",
    ),
    (
      "GroupNorm channels-last, without transposes",
      "`torch.nn.GroupNorm` puts consecutive channels in a group (group g = channels [g·C/G, (g+1)·C/G)), so on "
      "`(B, T, H, W, C)` reshaping C to `(G, C/G)` and reducing over every axis but batch and group is the same "
      f"computation ({loc(nf.GroupNorm)}): no transpose to channels-first, no merge of W with another axis. "
      "Statistics are float32 with the biased variance, two-pass; `(x - mean) * rsqrt(var + eps)`, then the "
      "per-channel affine.",
    ),
    (
      "SafeConv3d's time chunking, and why the port doesn't need it",
      f"diffusers ({loc(dm_safe.forward)}) counts the input at 2 bytes/element; above 2 GiB it splits time into "
      "`int(GiB / 2) + 1` `torch.chunk`s, prepends to each chunk after the first the previous chunk's last "
      "`k_t - 1` frames, convolves the chunks one by one and concatenates. The input is already causally padded "
      "and the time stride is 1, so this computes exactly the frames of one convolution: it only bounds cuDNN's "
      f"workspace. The port ({loc(nf.CogVideoXSafeConv3d)}) is a plain Conv3d: XLA plans the convolution's memory, "
      "the driver already bounds activations (1-3 latent frames per step, spatial tiles), and the traced program "
      "has no size-dependent branch.",
    ),
    (
      "The quant_conv / post_quant_conv channel quirk",
      f"diffusers builds `quant_conv = CogVideoXSafeConv3d(2 * out_channels, 2 * out_channels, 1)` and "
      "`post_quant_conv = CogVideoXSafeConv3d(out_channels, out_channels, 1)` "
      f"({loc(dm_vae.__init__, 'self.quant_conv =')}) "
      "with `out_channels` the *image* channels, not `latent_channels`: they fit the encoder/decoder only when "
      "`latent_channels == out_channels`. Every released CogVideoX VAE has both off. The port mirrors the "
      f"channel counts exactly ({loc(nf.AutoencoderKLCogVideoX.__init__, 'self.quant_conv =')}), so state dicts "
      "load 1:1; `quant_conv` runs after the encoder and `post_quant_conv` before the decoder, once per frame step, "
      "with no cache (1×1×1).",
    ),
    (
      "Hard-coded eps=1e-6 in SpatialNorm3D (and encoder.norm_out)",
      f"`CogVideoXSpatialNorm3D.norm_layer` is `nn.GroupNorm(..., eps=1e-6)` whatever the config's `norm_eps` "
      f"({loc(dm_norm.__init__, 'eps=1e-6')}; port {loc(nf.CogVideoXSpatialNorm3D.__init__, 'eps=1e-6')}); so is "
      f"the encoder's `norm_out` ({loc(dm_enc.__init__, 'self.norm_out')}). Every decoder norm is a SpatialNorm3D, "
      "so `norm_eps` reaches only the encoder's resnets. Likewise `conv_act` is SiLU whatever `act_fn` says.",
    ),
  ]
  lines = _numbered(notes)
  lines += [
    f"Also mirrored: `DiagonalGaussianDistribution` ({loc(dvae.DiagonalGaussianDistribution)} → "
    f"{loc(nf.DiagonalGaussianDistribution)}) on channels-last moments (`mean ‖ logvar` on the last axis, "
    "logvar clamped to [-30, 20]); diffusers' `_encode`/`_decode` frame batching (8 video / 2 latent frames per "
    f"step, the remainder in the first step; {loc(dm_vae._decode, 'frame_batch_size =')} → {loc(nf._frame_steps)}).",
    "",
  ]
  return lines


def render(errors: dict[str, float] | None) -> str:
  """The document. ``errors=None``: every measured cell is :data:`NOT_MEASURED` (the mapping only)."""
  import diffusers

  from native_flax import convert

  errors = errors or {}
  torch_cls, nnx_cls = torch_classes(), nnx_classes()
  config = _real_config()
  model = convert.abstract_model(config)
  counts = _instance_counts(model)
  mappings = convert.key_mapping(model)

  out = [
    "# Porting reference: diffusers video VAEs (CogVideoX, Wan) → Flax NNX (`native_flax`)",
    "",
    "<!-- Generated by `python -m compare.reference`; do not edit. `tests/test_reference.py` fails when the "
    "code no longer matches it. -->",
    "",
    f"Generated from the code: diffusers {diffusers.__version__} (paths relative to site-packages), "
    "`native_flax/autoencoder_kl_cogvideox.py`, `native_flax/autoencoder_kl_wan.py`, `native_flax/layers.py` and "
    "`native_flax/convert.py`. Only the error columns are measured; everything else is derived without running a "
    "model. Sections 1-4: CogVideoX; 5-8: Wan 2.1 / 2.2; the layout rules (section 2) serve both. To port the "
    "next model: mirror each class with the same attribute names, add its layout rules (section 2), and check "
    "each class against diffusers as sections 1 and 5 do.",
    "",
    "## 1. Module classes",
    "",
    "Error: fp32 max abs difference of the output (both steps where there is a conv cache) against diffusers, "
    "on CPU, random weights (diffusers' default init, 1-D parameters perturbed) copied into the NNX module "
    "through `native_flax.convert`'s layout rules; inputs `numpy` normal with fixed seeds. Shapes are diffusers' "
    "`(B, C, T, H, W)`; the port runs channels-last `(B, T, H, W, C)` under `jax.jit`. "
    "\"In 2b\": instances of the NNX class in the CogVideoX-2b model.",
    "",
  ]
  rows = []
  for name in CLASSES:
    rows.append(
      [
        f"`{name}`",
        f"`{location(torch_cls[name])}`",
        f"`{nnx_cls[name].__name__}`",
        f"`{location(nnx_cls[name])}`",
        counts.get(nnx_cls[name], 0),
        CASES[name].description,
        format_error(errors.get(name)),
      ]
    )
  nnx_class = f"NNX class (`{nnx_cls[CLASSES[0]].__module__}`)"
  header = ["diffusers class", "diffusers file:line", nnx_class, "file:line", "in 2b", "case (tiny)", "max abs err"]
  out += _table(header, rows)
  out += ["", "Whole model:", ""]
  whole = [WHOLE_MODEL, WHOLE_MODEL_CASE.description, format_error(errors.get(WHOLE_MODEL))]
  out += _table(["model", "case", "max abs err"], [whole])
  out += [
    "",
    "PyTorch leaves the ports re-implement (channels-last, Flax parameter names; the layers in "
    "`native_flax/layers.py`, shared by both ports): "
    + ", ".join(f"`{torch_name}` → `{nnx_name}` (`{location(obj)}`)" for torch_name, nnx_name, obj in _leaves())
    + ".",
    "",
    "## 2. Layout rules",
    "",
    "`native_flax.convert.LAYOUT_RULES`: the whole state-dict mapping. Module paths are identical on both sides; "
    "the rule of the NNX layer kind that owns a parameter names the leaf and moves its axes "
    "(O/I: out/in channels, D/H/W: kernel time/height/width, C: channels; `nnx = np.transpose(torch, perm)`).",
    "",
  ]
  out += _table(
    ["rule", "diffusers key", "NNX path", "transform", "covers"],
    [
      [f"`{r['name']}`", f"`{r['torch_pattern']}`", f"`{r['nnx_pattern']}`", f"`{r['transform']}`", r["covers"]]
      for r in convert.describe_rules()
    ],
  )
  out += ["", "## 3. Translation notes", ""]
  out += _notes()

  per_rule: dict[str, int] = {}
  for m in mappings:
    per_rule[m.rule.name] = per_rule.get(m.rule.name, 0) + 1
  n_params = sum(math.prod(m.nnx_shape) for m in mappings)
  out += [
    "## 4. Weight keys of CogVideoX-2b",
    "",
    f"`convert.key_mapping(config)` for `compare.checkpoints.COGVIDEOX_2B` (the released `vae/config.json`): "
    f"{len(mappings)} keys, {n_params:,} parameters, built with `nnx.eval_shape` (no weights). Per rule: "
    + ", ".join(f"`{k}` {v}" for k, v in per_rule.items())
    + ".",
    "",
  ]
  out += _key_table(mappings)
  out += _wan_sections(errors)
  return "\n".join(out) + "\n"


def _key_table(mappings) -> list[str]:
  return _table(
    ["#", "diffusers key", "torch shape", "NNX path", "NNX shape", "rule"],
    [
      [i, f"`{m.torch_key}`", _shape(m.torch_shape), f"`{m.nnx_key}`", _shape(m.nnx_shape), f"`{m.rule.name}`"]
      for i, m in enumerate(mappings, 1)
    ],
  )


def _wan_real_configs() -> dict[str, Any]:
  from compare.checkpoints import WAN_2_1, WAN_2_2
  from torchax_vae.core.checkpoint import WanVAEConfig

  return {"2.1": WanVAEConfig.from_dict(WAN_2_1), "2.2": WanVAEConfig.from_dict(WAN_2_2)}


def _wan_sections(errors: dict[str, float]) -> list[str]:
  from native_flax import convert

  torch_cls, nnx_cls = wan_torch_classes(), wan_nnx_classes()
  models = {v: convert.abstract_model(c) for v, c in _wan_real_configs().items()}
  counts = {v: _instance_counts(m) for v, m in models.items()}
  out = [
    "",
    "## 5. Wan module classes",
    "",
    "As section 1, for `diffusers/models/autoencoders/autoencoder_kl_wan.py` and `native_flax/autoencoder_kl_wan.py`. "
    "Modules with a causal cache are run for three chunks each side — diffusers threading its one mutable "
    "`feat_cache` list (a fresh `feat_idx` per chunk, as `_decode`), the port its returned cache — so the first "
    "chunk, the second (diffusers' 1-frame and `\"Rep\"` caches) and the steady state are all compared. "
    "\"In 2.1\" / \"in 2.2\": instances in the real Wan 2.1 / Wan 2.2 (TI2V-5B) models.",
    "",
  ]
  rows = [
    [
      f"`{name}`", f"`{location(torch_cls[name])}`", f"`{nnx_cls[name].__name__}`", f"`{location(nnx_cls[name])}`",
      counts["2.1"].get(nnx_cls[name], 0), counts["2.2"].get(nnx_cls[name], 0), WAN_CASES[name].description,
      format_error(errors.get(name)),
    ]
    for name in WAN_CLASSES
  ]  # fmt: skip
  header = ["diffusers class", "diffusers file:line", "NNX class (`native_flax.autoencoder_kl_wan`)", "file:line",
            "in 2.1", "in 2.2", "case (tiny)", "max abs err"]  # fmt: skip
  out += _table(header, rows)
  out += ["", "Whole models:", ""]
  out += _table(
    ["model", "case", "max abs err"],
    [[name, WAN_WHOLE_MODEL_CASES[v].description, format_error(errors.get(name))] for v, name in WAN_WHOLE_MODELS.items()],
  )
  out += ["", "## 6. Wan translation notes", ""]
  out += _wan_notes()
  for number, (variant, model) in enumerate(models.items(), 7):
    mappings = convert.key_mapping(model)
    per_rule: dict[str, int] = {}
    for m in mappings:
      per_rule[m.rule.name] = per_rule.get(m.rule.name, 0) + 1
    n_params = sum(math.prod(m.nnx_shape) for m in mappings)
    preset = "WAN_2_1" if variant == "2.1" else "WAN_2_2"
    out += [
      f"## {number}. Weight keys of Wan {variant}",
      "",
      f"`convert.key_mapping(config)` for `compare.checkpoints.{preset}` (the released `vae/config.json`): "
      f"{len(mappings)} keys, {n_params:,} parameters. Per rule: "
      + ", ".join(f"`{k}` {v}" for k, v in per_rule.items())
      + ".",
      "",
    ]
    out += _key_table(mappings) + [""]
  return out[:-1]


REP_LINE = 'feat_cache[idx] = "Rep"'  # the line of diffusers' WanResample.forward that stores the marker


def _wan_notes() -> list[str]:
  from native_flax import autoencoder_kl_wan as nf
  from torchax_vae.core.models import wan as wan_adapter

  t = wan_torch_classes()

  loc = _loc

  notes = [
    (
      "The cache is a value, the same shape on every step",
      "diffusers keeps one list `feat_cache` (a slot per `WanCausalConv3d`) and a counter `feat_idx`, and every "
      f"cached layer stores `cache_x = x[:, :, -CACHE_T:]`, with the previous cache's last frame in front when "
      f"the chunk has one frame ({loc(t['WanResidualBlock'].forward, 'cache_x = x[:, :, -CACHE_T:')}). "
      "So a slot holds 1 frame after the first chunk and 2 later. The port's modules take and return their own "
      "nested-dict cache; a causal conv's entry is always the last 2 frames of its time-padded input, zeros in "
      f"front ({loc(nf.WanCausalConv3d.cached)}): the conv pads with zeros to 2 frames before the cache "
      f"anyway ({loc(t['WanCausalConv3d'].forward, 'padding[4] -= cache_x.shape[2]')}), so the arithmetic is "
      "diffusers', and one steady program serves every step after the first.",
    ),
    (
      "`\"Rep\"`: upsample3d on the first chunk",
      "On the first chunk diffusers' `upsample3d` skips its time conv and stores the string `\"Rep\"` "
      f"({loc(t['WanResample'].forward, REP_LINE)}); on the next chunk that means \"zero frames "
      "in front\". The port stores 2 zero frames instead "
      f"({loc(nf.WanResample.__call__, 'diffusers stores')}): the same zeros, concatenated instead of padded. "
      "Later chunks double time by interleaving the time conv's two channel halves (frames 2t, 2t + 1).",
    ),
    (
      "Causal padding moved into the convolution",
      f"`WanCausalConv3d` zero-pads H, W (both sides) and time (front, `2 * padding[0]`) with `F.pad`, then "
      f"convolves unpadded ({loc(t['WanCausalConv3d'].__init__, 'self._padding =')}). The port pads time in front "
      f"and lets the convolution pad H and W ({loc(nf.WanCausalConv3d)}): the same windows, and on XLA:CPU an "
      "unpadded convolution is the slow path (`torchax_vae/core/conv.py`).",
    ),
    (
      "RMS norm over channels, `gamma` in diffusers' shape",
      f"`WanRMS_norm` is `F.normalize(x, dim=channels) * sqrt(dim) * gamma` ({loc(t['WanRMS_norm'].forward)}), "
      "float32 for reduced-precision inputs; `F.normalize` is `x / max(||x||, 1e-12)`. The port reduces over the "
      f"last axis ({loc(nf.WanRMS_norm.__call__)}) and keeps `gamma` as `(C, 1, 1, 1)` (`(C, 1, 1)` in attention) so "
      "it loads as it is (rule `rms_norm_gamma`), read as `(C,)`. No axis but channels is reduced: a width split "
      "needs no collective.",
    ),
    (
      "nearest-exact 2× is a repeat",
      f"`WanUpsample` resizes with `mode=\"nearest-exact\"` in float32 ({loc(t['WanUpsample'].forward)}). With "
      "an integer factor the source index `floor((dst + 0.5) / 2)` is `dst // 2`, so the port repeats rows and "
      f"columns ({loc(nf.WanUpsample.__call__)}); the float32 round trip copies the same values.",
    ),
    (
      "Attention keeps H and W",
      "diffusers flattens each frame's positions into one token axis "
      f"({loc(t['WanAttentionBlock'].forward, 'qkv = qkv.reshape(')}) and calls `scaled_dot_product_attention`. "
      f"The port computes the same scores as `(N, H, W, H, W)` with two einsums ({loc(nf.WanAttentionBlock.attend)}): "
      "with the width split over devices the queries and the output stay split and only the keys and values are "
      "gathered (2 all-gathers per program on `dp=2,tp=4`; the torchax path, running diffusers' reshape, gathers "
      "q, k and v together).",
    ),
    (
      "Wan 2.2's shortcuts and patchify, channels-last",
      f"`AvgDown3D`/`DupUp3D` move space and time into channels and back with `view`/`permute` "
      f"({loc(t['AvgDown3D'].forward)}, {loc(t['DupUp3D'].forward)}); the port does the same reshapes on "
      f"`(B, T, H, W, C)` with the channel offsets in diffusers' order ({loc(nf.AvgDown3D.__call__)}, "
      f"{loc(nf.DupUp3D.__call__)}). `patchify`/`unpatchify` and the clamp of `_decode` run on the whole video, "
      f"outside the frame steps: in the model adapter ({loc(wan_adapter._patchify)}) for the driver, and in "
      f"`AutoencoderKLWan.decode`/`encode` ({loc(nf.patchify)}) for whole-loop use.",
    ),
  ]
  return _numbered(notes)


def _leaves():
  from native_flax import autoencoder_kl_cogvideox as nf

  return [
    ("nn.Conv3d", "Conv3d", nf.Conv3d),
    ("nn.Conv2d", "Conv2d", nf.Conv2d),
    ("nn.GroupNorm", "GroupNorm", nf.GroupNorm),
    ("nn.Linear", "Linear", nf.Linear),
    ('F.interpolate(mode="nearest")', "interpolate_nearest", nf.interpolate_nearest),
    ("F.avg_pool1d(2, 2)", "_avg_pool_time", nf._avg_pool_time),
    ("get_activation", "get_activation", nf.get_activation),
  ]


def stale_diff(text: str, expected: str | None = None, limit: int = 60) -> str:
  """Unified diff (first ``limit`` lines) between a document's mapping and the code's (``render(None)``,
  or ``expected``); empty if the document is current."""
  expected = (render(None) if expected is None else expected).splitlines(keepends=True)
  actual = mask_errors(text).splitlines(keepends=True)
  diff = list(difflib.unified_diff(actual, expected, "committed (errors masked)", "from the code"))
  return "".join(diff[:limit])


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", type=Path, default=DOC, help="where to write (default: docs/port_reference.md)")
  parser.add_argument("--check", action="store_true", help="no live run: exit 1 if --output's mapping is stale")
  args = parser.parse_args(argv)

  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  if args.check:
    diff = stale_diff(args.output.read_text())
    if diff:
      print(f"{args.output} is stale; rerun `python -m compare.reference`:\n{diff}", file=sys.stderr)
      return 1
    print(f"{args.output}: mapping is current")
    return 0

  print("measuring (fp32, CPU) ...", file=sys.stderr)
  errors = measure(log=lambda s: print(s, file=sys.stderr))
  args.output.parent.mkdir(parents=True, exist_ok=True)
  args.output.write_text(render(errors))
  print(f"wrote {args.output}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
