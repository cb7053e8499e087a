"""native_flax: every NNX module against its diffusers counterpart on the same weights.

Each test builds the diffusers module with ``torch.manual_seed`` (default init, with norms and biases
perturbed so that no parameter is trivially 0 or 1), copies its ``state_dict`` into the NNX module
through ``native_flax.convert``'s layout rules, runs both on the same input (and, where there is a
causal conv cache, a second step on the cache each side returned) and compares outputs and caches
after moving channels-last back to channels-first.

Tolerance: fp32 max abs error <= 1e-5 per module output on these tiny configs; cache leaves
(internal activations) <= 1e-5 relative to their magnitude; whole-model steps (tiny, and the real
CogVideoX-2b config's encoder) <= the project's 1e-4. Measured errors are ~1e-6 throughout. No
matmul-precision override is needed: XLA's CPU convolutions are full fp32. Modules are built with
``nnx.eval_shape`` and run under ``jax.jit`` (as the driver runs them). ``-s`` prints the errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX as TorchVAE
from diffusers.models.autoencoders import autoencoder_kl_cogvideox as dm
from diffusers.models.downsampling import CogVideoXDownsample3D as TorchDownsample3D
from diffusers.models.upsampling import CogVideoXUpsample3D as TorchUpsample3D
from flax import nnx
from helpers import FAST_COMPILE, ErrorLog, build, cl, err_of, perturb, pt, randn, run, state_numpy, torch_decode, torch_encode_mean

import native_flax
from compare.checkpoints import COGVIDEOX_2B, TINY
from native_flax import autoencoder_kl_cogvideox as nf
from native_flax import backend, convert
from torchax_vae.core.checkpoint import CheckpointError, CogVideoXVAEConfig
from torchax_vae.core.models.cogvideox import frame_steps

TOL = 1e-5  # fp32 max abs per module, tiny configs
MODEL_TOL = 1e-4  # fp32 max abs, whole model (the project's bar)
ERRORS = ErrorLog("native_flax vs diffusers")


@pytest.fixture(scope="module", autouse=True)
def _report_errors():
  yield
  ERRORS.report()


# --- helpers -------------------------------------------------------------------------------------


def _moments(model, x):
  return model.encode(x).parameters


def check(name: str, ours, ref: torch.Tensor, tol: float = TOL) -> float:
  return ERRORS.check(name, ours, ref, tol)


def check_cache(name: str, ours, ref, tol: float = TOL) -> None:
  """Same nested keys as diffusers; equal leaves. A 1-frame-kernel conv (SpatialNorm3D's conv_y /
  conv_b) has nothing to cache: diffusers stores its whole input there (``[-0:]``), we store None.

  Leaves are internal activations (|x| up to ~10 deep in a decoder), so each is held to
  ``tol * max(1, max |leaf|)``; the reported number is that scaled error."""
  worst = 0.0

  def walk(o, r, path):
    nonlocal worst
    if isinstance(r, dict):
      assert isinstance(o, dict) and set(o) == set(r), (path, sorted(o), sorted(r))
      for k in r:
        walk(o[k], r[k], (*path, k))
    elif o is None:
      assert path[-1] in ("conv_y", "conv_b"), f"{path}: no cache, but diffusers has one"
    else:
      worst = max(worst, err_of(o, r) / max(1.0, float(r.abs().max()) if r.numel() else 1.0))

  walk(ours, ref, ())
  ERRORS[f"{name} [cache]"] = max(worst, ERRORS.get(f"{name} [cache]", 0.0))
  assert worst <= tol, f"{name} cache: max abs error {worst:.3e}"


# --- Conv3d / Conv2d (3D in both forms: per-time-tap 2D convolutions, one 3D convolution) --------


@pytest.mark.parametrize("form", ["taps", "3d"])
@pytest.mark.parametrize(
  "kernel_size,stride,padding,dilation",
  [(3, 1, (0, 1, 1), 1), ((3, 3, 2), (2, 1, 2), (1, 0, 1), (2, 1, 1)), (1, 1, 0, 1), ((1, 3, 3), 1, 1, 1)],
)
def test_conv3d_matches_torch(kernel_size, stride, padding, dilation, form):
  from torchax_vae.core import conv as conv_lib

  name = f"Conv3d {form} k={kernel_size} s={stride} p={padding} d={dilation}"
  torch.manual_seed(0)
  ref = perturb(torch.nn.Conv3d(4, 6, kernel_size, stride=stride, padding=padding, dilation=dilation), 0)
  ours = nf.Conv3d(4, 6, kernel_size, stride=stride, padding=padding, dilation=dilation, rngs=nnx.Rngs(0))
  ours.kernel[...] = jnp.asarray(ref.weight.detach().numpy().transpose(2, 3, 4, 1, 0))
  ours.bias[...] = jnp.asarray(ref.bias.detach().numpy())
  x = randn(2, 4, 7, 6, 5, seed=1)
  with torch.no_grad():
    expected = ref(pt(x))
  with conv_lib.using_form(form):
    check(name, run(ours, cl(x)), expected)


# --- CogVideoXCausalConv3d -----------------------------------------------------------------------


@pytest.mark.parametrize(
  "kernel_size,pad_mode", [(3, "constant"), ((3, 1, 1), "first"), (1, "constant"), (3, "replicate")]
)
def test_causal_conv3d(kernel_size, pad_mode):
  name = f"CausalConv3d k={kernel_size} {pad_mode}"
  ref, ours = build(dm.CogVideoXCausalConv3d, nf.CogVideoXCausalConv3d, 4, 6, kernel_size, pad_mode=pad_mode)
  x1, x2 = randn(2, 4, 3, 5, 6, seed=1), randn(2, 4, 2, 5, 6, seed=2)
  with torch.no_grad():
    r1, rc = ref(pt(x1))
    r2, _ = ref(pt(x2), conv_cache=rc)
  o1, oc = run(ours, cl(x1))
  o2, _ = run(ours, cl(x2), oc)
  check(name, o1, r1)
  check(name + " (cached step)", o2, r2)
  if pad_mode == "replicate":
    assert rc is None and oc is None
  elif ours.time_kernel_size == 1:
    assert oc is None and rc.shape == pt(x1).shape  # diffusers keeps the whole input, unused
  else:
    assert oc.shape == (2, 2, 5, 6, 4)
    check(name + " [cache]", oc, rc)


# --- CogVideoXSpatialNorm3D ----------------------------------------------------------------------


@pytest.mark.parametrize(
  "f_shape,z_shape",
  [
    ((5, 8, 6), (3, 4, 3)),  # odd T: first frame resized on its own
    ((4, 8, 6), (2, 4, 3)),  # even T
    ((1, 4, 6), (1, 2, 3)),
    ((3, 4, 3), (3, 4, 3)),  # same size (decoder mid block)
    ((6, 10, 7), (4, 3, 3)),  # non-integer ratios: floor(dst * in / out)
    ((5, 7, 6), (4, 3, 3)),  # odd T and non-integer ratios: the one time index, not two pieces joined
  ],
)
def test_spatial_norm3d(f_shape, z_shape):
  name = f"SpatialNorm3D f{f_shape} zq{z_shape}"
  ref, ours = build(dm.CogVideoXSpatialNorm3D, nf.CogVideoXSpatialNorm3D, 8, 4, groups=4)
  f, z = randn(2, 8, *f_shape, seed=3), randn(2, 4, *z_shape, seed=4)
  with torch.no_grad():
    r, rc = ref(pt(f), pt(z))
  o, oc = run(ours, cl(f), cl(z))
  check(name, o, r)
  check_cache(name, oc, rc)


def test_interpolate_nearest_index_rule():
  for n_in, n_out in [(3, 10), (3, 7), (4, 6), (5, 3), (7, 21), (2, 4), (6, 6)]:
    x = torch.arange(n_in, dtype=torch.float32)[None, None]
    ref = torch.nn.functional.interpolate(x, size=n_out, mode="nearest")[0, 0].numpy()
    ours = nf.interpolate_nearest(jnp.arange(n_in, dtype=jnp.float32), (n_out,), (0,))
    np.testing.assert_array_equal(np.asarray(ours), ref)


# --- CogVideoXResnetBlock3D ----------------------------------------------------------------------

RESNET_CASES = {
  "8->16, 1x1x1 shortcut": dict(in_channels=8, out_channels=16, temb_channels=0, groups=4),
  "8->16, causal conv_shortcut": dict(in_channels=8, out_channels=16, temb_channels=0, groups=4, conv_shortcut=True),
  "8->8, spatial norm (zq)": dict(in_channels=8, out_channels=8, temb_channels=0, groups=4, spatial_norm_dim=4),
  "8->16, zq, temb, gelu, eps 1e-5": dict(
    in_channels=8, out_channels=16, temb_channels=6, groups=4, spatial_norm_dim=4, non_linearity="gelu", eps=1e-5
  ),
  "8->8, mish": dict(in_channels=8, out_channels=8, temb_channels=0, groups=2, non_linearity="mish"),
}


@pytest.mark.parametrize("case", list(RESNET_CASES))
def test_resnet_block3d(case):
  kwargs = RESNET_CASES[case]
  name = f"ResnetBlock3D {case}"
  ref, ours = build(dm.CogVideoXResnetBlock3D, nf.CogVideoXResnetBlock3D, **kwargs)
  use_zq = kwargs.get("spatial_norm_dim") is not None
  temb = randn(2, 6, seed=9) if kwargs["temb_channels"] else None
  caches = (None, None)
  for step, frames in enumerate((3, 2)):
    x = randn(2, 8, frames, 6, 4, seed=10 + step)
    z = randn(2, 4, frames, 3, 2, seed=20 + step) if use_zq else None
    with torch.no_grad():
      r, rc = ref(pt(x), None if temb is None else pt(temb), None if z is None else pt(z), conv_cache=caches[0])
    o, oc = run(ours, cl(x), None if temb is None else jnp.asarray(temb), None if z is None else cl(z), caches[1])
    label = name + (" (cached step)" if step else "")
    check(label, o, r)
    check_cache(label, oc, rc)
    caches = (rc, oc)
  if kwargs.get("conv_shortcut"):
    assert "conv_shortcut" in oc


# --- CogVideoXDownsample3D / CogVideoXUpsample3D -------------------------------------------------


@pytest.mark.parametrize("compress_time", [False, True])
@pytest.mark.parametrize("frames", [1, 4, 5])
def test_downsample3d(compress_time, frames):
  name = f"Downsample3D compress_time={compress_time} T={frames}"
  ref, ours = build(TorchDownsample3D, nf.CogVideoXDownsample3D, 8, 12, compress_time=compress_time)
  x = randn(2, 8, frames, 7, 6, seed=frames)  # odd H: the (0, 1) pad matters
  with torch.no_grad():
    r = ref(pt(x))
  check(name, run(ours, cl(x)), r)


@pytest.mark.parametrize("compress_time", [False, True])
@pytest.mark.parametrize("frames", [1, 2, 3])
def test_upsample3d(compress_time, frames):
  name = f"Upsample3D compress_time={compress_time} T={frames}"
  ref, ours = build(TorchUpsample3D, nf.CogVideoXUpsample3D, 8, 12, compress_time=compress_time)
  x = randn(2, 8, frames, 3, 4, seed=frames)
  with torch.no_grad():
    r = ref(pt(x))
  check(name, run(ours, cl(x)), r)


# --- blocks --------------------------------------------------------------------------------------


def _two_steps(name, ref, ours, inputs, zqs=None):
  caches = (None, None)
  for step, x in enumerate(inputs):
    z = None if zqs is None else zqs[step]
    with torch.no_grad():
      r, rc = ref(pt(x), None, None if z is None else pt(z), conv_cache=caches[0])
    o, oc = run(ours, cl(x), None, None if z is None else cl(z), caches[1])
    label = name + (" (cached step)" if step else "")
    check(label, o, r)
    check_cache(label, oc, rc)
    caches = (rc, oc)


@pytest.mark.parametrize("add_downsample", [True, False])
def test_down_block3d(add_downsample):
  ref, ours = build(
    dm.CogVideoXDownBlock3D, nf.CogVideoXDownBlock3D, 8, 16, temb_channels=0, num_layers=2, resnet_groups=4,
    add_downsample=add_downsample, compress_time=True,
  )
  xs = [randn(1, 8, 5, 8, 6, seed=1), randn(1, 8, 4, 8, 6, seed=2)]
  _two_steps(f"DownBlock3D add_downsample={add_downsample}", ref, ours, xs)


@pytest.mark.parametrize("spatial_norm_dim", [None, 4])
def test_mid_block3d(spatial_norm_dim):
  ref, ours = build(
    dm.CogVideoXMidBlock3D, nf.CogVideoXMidBlock3D, 16, temb_channels=0, num_layers=2, resnet_groups=4,
    spatial_norm_dim=spatial_norm_dim,
  )
  xs = [randn(1, 16, 3, 4, 6, seed=1), randn(1, 16, 2, 4, 6, seed=2)]
  zs = None if spatial_norm_dim is None else [randn(1, 4, 3, 4, 6, seed=3), randn(1, 4, 2, 4, 6, seed=4)]
  _two_steps(f"MidBlock3D spatial_norm_dim={spatial_norm_dim}", ref, ours, xs, zs)


@pytest.mark.parametrize("compress_time", [True, False])
def test_up_block3d(compress_time):
  ref, ours = build(
    dm.CogVideoXUpBlock3D, nf.CogVideoXUpBlock3D, 16, 8, temb_channels=0, num_layers=2, resnet_groups=4,
    spatial_norm_dim=4, compress_time=compress_time,
  )
  # As up_block_1 of a decoder: f has 2x the latent's H, W and (odd) 2T - 1 frames.
  xs = [randn(1, 16, 5, 4, 6, seed=1), randn(1, 16, 4, 4, 6, seed=2)]
  zs = [randn(1, 4, 3, 2, 3, seed=3), randn(1, 4, 2, 2, 3, seed=4)]
  _two_steps(f"UpBlock3D compress_time={compress_time}", ref, ours, xs, zs)


# --- encoder / decoder ---------------------------------------------------------------------------

# Two time levels (the 2-block TINY model below has one); non-default eps and layers_per_block.
CODER_CONFIGS = {
  "3 blocks, 2 time levels": dict(block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4, norm_eps=1e-5),
}


@pytest.mark.parametrize("cfg", list(CODER_CONFIGS))
def test_encoder3d(cfg):
  blocks = len(CODER_CONFIGS[cfg]["block_out_channels"])
  kwargs = dict(CODER_CONFIGS[cfg], down_block_types=("CogVideoXDownBlock3D",) * blocks)
  ref, ours = build(dm.CogVideoXEncoder3D, nf.CogVideoXEncoder3D, in_channels=3, out_channels=4, **kwargs)
  xs = [np.tanh(randn(1, 3, 9, 16, 12, seed=1)), np.tanh(randn(1, 3, 8, 16, 12, seed=2))]
  caches = (None, None)
  for step, x in enumerate(xs):
    with torch.no_grad():
      r, rc = ref(pt(x), conv_cache=caches[0])
    o, oc, inter = run(ours, cl(x), None, caches[1], return_intermediates=True)
    label = f"Encoder3D {cfg}" + (" (cached step)" if step else "")
    check(label, o, r)
    check_cache(label, oc, rc)
    assert set(inter) >= {"conv_in", "down_block_0", "mid_block", "norm_out", "conv_out"}
    np.testing.assert_array_equal(inter["conv_out"], o)
    caches = (rc, oc)


@pytest.mark.parametrize("cfg", list(CODER_CONFIGS))
def test_decoder3d(cfg):
  blocks = len(CODER_CONFIGS[cfg]["block_out_channels"])
  kwargs = dict(CODER_CONFIGS[cfg], up_block_types=("CogVideoXUpBlock3D",) * blocks)
  ref, ours = build(dm.CogVideoXDecoder3D, nf.CogVideoXDecoder3D, in_channels=4, out_channels=3, **kwargs)
  zs = [randn(1, 4, 3, 4, 3, seed=1), randn(1, 4, 2, 4, 3, seed=2)]
  caches = (None, None)
  for step, z in enumerate(zs):
    with torch.no_grad():
      r, rc = ref(pt(z), conv_cache=caches[0])
    o, oc = run(ours, cl(z), None, caches[1])
    label = f"Decoder3D {cfg}" + (" (cached step)" if step else "")
    check(label, o, r)
    check_cache(label, oc, rc)
    caches = (rc, oc)


# --- the whole model -----------------------------------------------------------------------------


def _tiny_pair(overrides: dict | None = None, seed: int = 0):
  raw = dict(TINY, **(overrides or {}))
  torch.manual_seed(seed)
  ref = perturb(TorchVAE(**raw), seed)
  config = CogVideoXVAEConfig.from_dict(raw)
  return ref, convert.load_model(state_numpy(ref), config, source="tiny")


@pytest.fixture(scope="module")
def tiny_pair():
  return _tiny_pair()


@pytest.fixture(scope="module")
def tiny_steps(tiny_pair):
  params, steps = backend.make_steps(tiny_pair[1])
  assert steps.layout == "BTHWC"
  jit = lambda f: jax.jit(f, compiler_options=FAST_COMPILE)  # noqa: E731
  return params, jit(steps.decode_step), jit(steps.encode_step)


def _walk_steps(step, params, ref_coder, x, per_step):
  """The driver's frame-step walk on both sides; every step's output and cache is compared."""
  ours_out, ref_out, caches = [], [], (None, None)
  for start, end in frame_steps(x.shape[2], per_step):
    chunk = x[:, :, start:end]
    with torch.no_grad():
      r, rc = ref_coder(pt(chunk), conv_cache=caches[0])
    o, oc = step(params, cl(chunk), caches[1])
    ours_out.append(o)
    ref_out.append(r)
    caches = (rc, oc)
  return ours_out, ref_out, caches


@pytest.mark.parametrize("frames", [1, 5])  # 5: a step of 3 latent frames, then a cached step of 2
def test_decode_step(tiny_pair, tiny_steps, frames):
  ref, _ = tiny_pair
  params, decode_step, _ = tiny_steps
  z = randn(2, 4, frames, 4, 6, seed=frames)
  outs, refs, (rc, oc) = _walk_steps(decode_step, params, ref.decoder, z, 2)
  for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
    check(f"decode_step (jit) T={frames}, step {i}", o, r, MODEL_TOL)
  check_cache(f"decode_step (jit) T={frames}", oc, rc, MODEL_TOL)
  with torch.no_grad():
    video = ref.decode(pt(z)).sample
  check(f"decode steps vs diffusers decode T={frames}", jnp.concatenate(outs, axis=1), video, MODEL_TOL)


@pytest.mark.parametrize("frames", [1, 17])  # 17: a step of 9 frames, then a cached step of 8
def test_encode_step(tiny_pair, tiny_steps, frames):
  ref, _ = tiny_pair
  params, _, encode_step = tiny_steps
  x = np.tanh(randn(1, 3, frames, 16, 12, seed=frames))
  outs, refs, (rc, oc) = _walk_steps(encode_step, params, ref.encoder, x, 8)
  for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
    check(f"encode_step (jit) F={frames}, step {i}", o, r, MODEL_TOL)
  check_cache(f"encode_step (jit) F={frames}", oc, rc, MODEL_TOL)
  posterior = nf.DiagonalGaussianDistribution(jnp.concatenate(outs, axis=1))
  with torch.no_grad():
    dist = ref.encode(pt(x)).latent_dist
  check(f"encode steps vs diffusers encode, mean F={frames}", posterior.mode(), dist.mode(), MODEL_TOL)
  check(f"encode steps vs diffusers encode, std F={frames}", posterior.std, dist.std, MODEL_TOL)


def test_model_with_quant_convs():
  # diffusers builds quant_conv with 2*out_channels and post_quant_conv with out_channels (image
  # channels): they fit only when latent_channels == out_channels. Mirrored as is.
  ref, ours = _tiny_pair({"latent_channels": 3, "use_quant_conv": True, "use_post_quant_conv": True}, seed=1)
  assert ours.quant_conv.kernel.shape == (1, 1, 1, 6, 6) and ours.post_quant_conv.kernel.shape == (1, 1, 1, 3, 3)
  z = randn(1, 3, 3, 4, 4, seed=5)
  with torch.no_grad():
    r = ref.decode(pt(z)).sample
  check("AutoencoderKLCogVideoX (quant convs) decode", run(ours, cl(z), method="decode"), r, MODEL_TOL)
  x = np.tanh(randn(1, 3, 9, 8, 8, seed=6))
  with torch.no_grad():
    rm = ref.encode(pt(x)).latent_dist.mode()
  check("AutoencoderKLCogVideoX (quant convs) encode", run(ours, cl(x), method=_moments)[..., :3], rm, MODEL_TOL)


def test_load_returns_a_runner_matching_diffusers(tiny_dir, tiny_torch):
  vae = native_flax.load(tiny_dir)
  z = randn(1, 4, 3, 4, 6, seed=7)
  out = vae.decode(z)
  ref = torch_decode(tiny_torch, z)
  assert isinstance(out, np.ndarray) and out.shape == ref.shape
  err = float(np.abs(out - ref).max())
  ERRORS["native_flax.load(tiny).decode"] = err
  assert err <= MODEL_TOL
  x = np.tanh(randn(1, 3, 9, 16, 16, seed=8))
  mean = vae.encode(x)
  ref_mean = torch_encode_mean(tiny_torch, x)
  err = float(np.abs(mean - ref_mean).max())
  ERRORS["native_flax.load(tiny).encode mean"] = err
  assert mean.shape == ref_mean.shape and err <= MODEL_TOL


def test_bfloat16_runs_close(tiny_dir, tiny_torch):
  vae = native_flax.load(tiny_dir, dtype="bfloat16")
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(vae.params))
  z = randn(1, 4, 3, 4, 6, seed=7)
  out = vae.decode(jnp.asarray(z))
  assert out.dtype == jnp.bfloat16
  err = float(np.abs(np.asarray(out, np.float32) - torch_decode(tiny_torch, z)).max())
  ERRORS["native_flax.load(tiny, bf16).decode (vs fp32)"] = err
  assert err <= 0.1


# --- convert -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "raw",
  [TINY, COGVIDEOX_2B, dict(TINY, latent_channels=3, use_quant_conv=True, use_post_quant_conv=True)],
  ids=["tiny", "cogvideox-2b", "tiny+quant"],
)
def test_expected_shapes_are_diffusers_state_dict(raw):
  with torch.device("meta"):
    ref = TorchVAE(**raw)
  expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
  assert convert.expected_torch_shapes(CogVideoXVAEConfig.from_dict(raw)) == expected


def test_convert_round_trip_and_paths(tiny_pair):
  ref, ours = tiny_pair
  state = state_numpy(ref)
  back = convert.to_torch_state_dict(ours)
  assert set(back) == set(state)
  for k in state:
    np.testing.assert_array_equal(back[k], state[k])
  nnx_keys = {m.nnx_key for m in convert.key_mapping(ours)}
  assert "decoder.up_blocks.0.resnets.1.conv1.conv.kernel" in nnx_keys
  assert "decoder.up_blocks.0.resnets.1.norm1.norm_layer.scale" in nnx_keys
  assert "encoder.down_blocks.0.downsamplers.0.conv.kernel" in nnx_keys
  rows = convert.describe_rules()
  assert {r["name"] for r in rows} >= {"conv3d_weight", "conv2d_weight", "group_norm_weight", "linear_weight"}


def test_convert_rejects_bad_checkpoints(tiny_pair):
  ref, _ = tiny_pair
  config = CogVideoXVAEConfig.from_dict(TINY)
  state = state_numpy(ref)
  missing = dict(state)
  del missing["decoder.conv_in.conv.weight"]
  with pytest.raises(CheckpointError, match=r"1 missing keys: decoder\.conv_in\.conv\.weight"):
    convert.load_model(missing, config)
  unexpected = dict(state, **{"decoder.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(CheckpointError, match=r"unexpected keys: decoder\.extra\.weight"):
    convert.load_model(unexpected, config)
  misshaped = dict(state)
  misshaped["encoder.norm_out.weight"] = np.zeros(7, np.float32)
  with pytest.raises(CheckpointError, match=r"shape mismatches: encoder\.norm_out\.weight"):
    convert.load_model(misshaped, config)
  transposed = dict(state)
  transposed["decoder.conv_in.conv.weight"] = np.moveaxis(state["decoder.conv_in.conv.weight"], 0, -1)
  with pytest.raises(CheckpointError, match="shape mismatches"):
    convert.load_model(transposed, config)


# Importing native_flax is torch-free: tests/test_native_vae.py::test_native_flax_is_torch_free.


# --- the real config -----------------------------------------------------------------------------


@pytest.mark.slow
def test_real_config_first_encode_step(real_dir, real_torch):
  """CogVideoX-2b config (215.6M params, 4 blocks, 2 time levels): a first encode step (the moments,
  mean and log-variance) at the released widths, which the tiny config's 32-64 channels cannot show.
  Its first decode step (T=3, no cache) is tests/test_native_vae.py's real-config decode of
  ``REAL_Z_ODD``: the same ``backend.make_steps`` decode_step at the same latent, against diffusers."""
  from torchax_vae.core.checkpoint import load_checkpoint

  ckpt = load_checkpoint(real_dir)
  model = convert.load_model(ckpt.weights, ckpt.config, source=str(real_dir))
  params, steps = backend.make_steps(model)
  x = np.tanh(randn(1, 3, 9, 16, 16, seed=12))
  with torch.no_grad():
    r, _ = real_torch.encoder(pt(x))
  moments, _ = jax.jit(steps.encode_step)(params, cl(x), None)
  check("CogVideoX-2b encode_step F=9", moments, r, MODEL_TOL)


# --- width sharding ------------------------------------------------------------------------------


@pytest.mark.multidevice
def test_width_sharded_decode_is_exact_and_gathers_nothing(tiny_dir, tiny_torch):
  """dp=2,tp=4: matches diffusers, and no op merges the sharded width axis (no all-gather)."""
  from torchax_vae.core import mesh as mesh_lib

  sharded = native_flax.load(tiny_dir, mesh="dp=2,tp=4")
  z = randn(2, 4, 3, 4, 8, seed=13)
  err = float(np.abs(sharded.decode(z) - torch_decode(tiny_torch, z)).max())
  ERRORS["native_flax.load(tiny, dp=2,tp=4).decode"] = err
  assert err <= MODEL_TOL
  first, _ = sharded.step_programs("decode")
  placed = jax.device_put(cl(z), mesh_lib.activation_sharding(sharded.mesh, "BTHWC"))
  hlo = first.lower(sharded.params, placed).compile().as_text()
  assert "all-gather" not in hlo
