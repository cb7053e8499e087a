"""From a video pipeline's latents to MP4 files, exactly as diffusers gets from latents to frames.

    vae = torchax_vae.load("THUDM/CogVideoX-2b", subfolder="vae")
    video = torchax_vae.decode_latents(vae, latents)      # CogVideoXPipeline.decode_latents
    frames = to_uint8_frames(video)                       # VideoProcessor.postprocess_video, as uint8
    write_mp4(frames[0], "out.mp4", fps=8)

What each model's pipelines do between ``output_type="latent"`` and ``vae.decode`` is the model
adapter's (``adapter.pipeline_layout``, ``adapter.latents_for_decode``; diffusers 0.42):

* CogVideoX (``pipelines/cogvideo/pipeline_cogvideox.py``; CogVideoX 1.5 runs through the same
  ``CogVideoXPipeline`` class, and the image-to-video, video-to-video and fun-control pipelines decode
  the same way): latents ``(B, T, C, H, W)``, ``latents.permute(0, 2, 1, 3, 4)``, then ``1 /
  vae.config.scaling_factor * latents``. ``invert_scale_latents`` (True for 1.5) does not enter
  decoding: diffusers reads it only when it *encodes* an image for image-to-video
  (``pipeline_cogvideox_image2video.prepare_latents``). ``shift_factor`` is not used by these pipelines.
* Wan (``pipelines/wan/pipeline_wan.py``, ``pipeline_wan_i2v.py``; Wan 2.1, 2.2 A14B and TI2V-5B):
  latents ``(B, C, T, H, W)``, ``latents / (1 / latents_std) + latents_mean`` per channel, with the VAE
  config's ``latents_mean``/``latents_std``.

Nothing here imports torch: a ``.pt`` file is read with torch (imported then), a torch tensor in
gives a torch tensor out, as everywhere in this package.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .core import kinds
from .core.errors import CheckpointError
from .core.progress import ProgressArg

PIPELINE_LAYOUT = "BTCHW"  # what CogVideoXPipeline(..., output_type="latent") returns
VAE_LAYOUT = "BCTHW"  # what the VAE's decode takes (and what WanPipeline(..., output_type="latent") returns)
LAYOUTS = (PIPELINE_LAYOUT, VAE_LAYOUT)
LATENT_SUFFIXES = (".safetensors", ".npy", ".pt", ".pth")
# Keys a dict-valued .safetensors/.pt file may hold the latents under (else: its only tensor).
LATENT_KEYS = ("latents", "frames", "latent")


class LatentsError(ValueError):
  """A latents file or tensor that cannot be decoded (format, rank, channels)."""


class OutputPathError(ValueError):
  """An output path that is not an .mp4 or cannot be written."""


# --- latents in -----------------------------------------------------------------------------------


def load_latents(path: str | os.PathLike, *, key: str | None = None) -> np.ndarray:
  """Reads latents from ``.safetensors``, ``.npy`` or ``.pt``/``.pth``; returns a numpy array.

  A file holding several tensors needs ``key`` unless one of them is named ``latents``/``frames``.
  A ``.pt`` file is read with ``torch.load(weights_only=True)``: a tensor, a dict of tensors, or a
  tuple/list with one tensor (``pipe(..., return_dict=False)``). bfloat16 stays bfloat16.
  """
  path = Path(path)
  suffix = path.suffix.lower()
  if suffix not in LATENT_SUFFIXES:
    raise LatentsError(f"{path}: expected a .safetensors, .npy or .pt file, got suffix {path.suffix or '(none)'!r}")
  if not path.is_file():
    raise LatentsError(f"{path}: no such file")
  if suffix == ".npy":
    try:
      array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
      raise LatentsError(f"{path}: not a readable .npy array ({err})") from err
    if not isinstance(array, np.ndarray):
      raise LatentsError(f"{path}: expected one array, got {type(array).__name__}")
    return array
  if suffix == ".safetensors":
    from safetensors import SafetensorError, safe_open

    try:
      with safe_open(str(path), framework="numpy") as handle:
        name = _pick_key(list(handle.keys()), key, path)
        return handle.get_tensor(name)
    except (SafetensorError, OSError, TypeError, ValueError) as err:
      if isinstance(err, LatentsError):
        raise
      raise LatentsError(f"{path}: not a readable .safetensors file ({err})") from err
  return _load_torch(path, key)


def _load_torch(path: Path, key: str | None) -> np.ndarray:
  import pickle
  import zipfile

  import torch

  try:
    value = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
    first_line = str(err).splitlines()[0] if str(err) else ""
    raise LatentsError(
      f"{path}: not a torch file of plain tensors ({type(err).__name__}: {first_line}); "
      "save the latents tensor itself, e.g. torch.save(pipe(..., output_type='latent').frames, path)"
    ) from err
  if isinstance(value, tuple | list) and len(value) == 1:
    value = value[0]
  if isinstance(value, dict):
    tensors = {k: v for k, v in value.items() if isinstance(v, torch.Tensor)}
    value = tensors[_pick_key(list(tensors), key, path)]
  if not isinstance(value, torch.Tensor):
    raise LatentsError(f"{path}: expected a tensor (or a dict/tuple holding one), got {type(value).__name__}")
  value = value.detach().cpu()
  if value.dtype == torch.bfloat16:  # numpy has no bfloat16 of its own; ml_dtypes' is bit-compatible
    import ml_dtypes

    return value.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return value.numpy()


def _pick_key(keys: list[str], key: str | None, path: Path) -> str:
  if key is not None:
    if key not in keys:
      raise LatentsError(f"{path}: no tensor named {key!r}; it holds {sorted(keys)}")
    return key
  if len(keys) == 1:
    return keys[0]
  for name in LATENT_KEYS:
    if name in keys:
      return name
  raise LatentsError(
    f"{path}: holds {len(keys)} tensors {sorted(keys)[:8]}; say which one is the latents (--key NAME / key=)"
  )


def check_latents(latents: Any, layout: str, channels: int | None = None, model: str | None = None) -> None:
  """Rank, non-empty dims, floating dtype and (if given) the channel count, for ``layout``.

  ``model``: the model's name for the message (its diffusers class, e.g. ``"AutoencoderKLWan"``).
  """
  if layout not in LAYOUTS:
    raise LatentsError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
  shape, dtype = tuple(latents.shape), latents.dtype
  if len(shape) != 5:
    raise LatentsError(
      f"latents: expected 5 dims ({', '.join(layout)}), got shape {shape}"
      + (" — a single video's latents need a leading batch axis of 1" if len(shape) == 4 else "")
    )
  if 0 in shape:
    raise LatentsError(f"latents: expected non-empty dims, got shape {shape}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise LatentsError(f"latents: expected a floating dtype, got {dtype}")
  axis = layout.index("C")
  if channels is not None and shape[axis] != channels:
    other = VAE_LAYOUT if layout == PIPELINE_LAYOUT else PIPELINE_LAYOUT
    hint = ""
    if shape[other.index("C")] == channels:
      hint = f"; it looks like {other} — pass layout={other!r} (--layout {other})"
    raise LatentsError(
      f"latents: expected {channels} latent channels on axis {axis} of {layout}"
      + (f" (the model, {model}, has {channels})" if model else "")
      + f", got {shape[axis]}: shape {shape}{hint}"
    )


def to_vae_layout(latents: Any, layout: str, channels: int, model: str | None = None) -> Any:
  """Checks the latents; ``(B, T, C, H, W)`` -> ``(B, C, T, H, W)`` (a ``jax.Array``)."""
  array, _ = kinds.to_jax(latents, "latents")
  check_latents(array, layout, channels, model)
  return array if layout == VAE_LAYOUT else jnp.swapaxes(array, 1, 2)


def decode_latents(
  model: Any,
  latents: Any,
  *,
  layout: str | None = None,
  scaling_factor: float | None = None,
  check_finite: bool = True,
  progress: ProgressArg = None,
  output_type: str = "video",
  video_shape: tuple[int, int, int] | None = None,
  decode_timestep: Any = None,
  decode_noise_scale: Any = None,
  generator: Any = None,
) -> Any:
  """What the model's pipeline does with its latents, on a JAX runner: latents -> video in ``[-1, 1]``.

  CogVideoX: ``CogVideoXPipeline.decode_latents``; Wan: ``WanPipeline``'s de-normalisation and decode;
  HunyuanVideo: ``/ scaling_factor``; LTX-Video: ``LTXPipeline``'s unpacking, de-normalisation (the
  VAE's ``latents_mean``/``latents_std`` buffers) and, for a timestep-conditioned decoder, its decode
  noise and timestep.

  Args:
    model: a runner from :func:`torchax_vae.load` or :func:`native_flax.load`.
    latents: what the pipeline returns with ``output_type="latent"``: ``(B, T, C, H, W)`` for
      CogVideoX, ``(B, C, T, H, W)`` for Wan (``layout``: default the model's pipeline layout;
      ``"BCTHW"`` is the VAE's own); torch tensor, numpy array or ``jax.Array``.
    scaling_factor: CogVideoX only: default ``model.config.scaling_factor``, as the pipeline's
      ``vae_scaling_factor_image``. Wan de-normalises with the config's ``latents_mean``/``latents_std``.
    progress: ``True`` shows a bar (stderr); a callable gets ``progress(done, total)`` after each
      decoded frame step (and tile); off by default.
    output_type: ``"video"``: ``(B, 3, F, H*s, W*s)`` in ``[-1, 1]`` (``vae.decode(<scaled
      latents>).sample``). ``"uint8"``: the frames diffusers' video processor makes of that video,
      ``(B, F, H*s, W*s, 3)`` uint8, computed where the video is (:func:`uint8_frames`), so only a
      quarter of float32's bytes leave the device.
    video_shape: LTX's packed ``(B, S, C)`` latents: the video's ``(num_frames, height, width)``, as
      given to the pipeline, to unpack them.
    decode_timestep, decode_noise_scale: LTX (timestep-conditioned, 0.9.1 on): the pipeline's
      arguments of those names (defaults 0.0 and the timestep).
    generator: LTX's decode noise: a ``torch.Generator`` (the pipeline's, for its exact noise), a JAX
      PRNG key, a list of either with one per sample (as diffusers' ``randn_tensor`` takes a list of
      generators: sample ``i`` drawn alone from the ``i``-th), or ``None`` (``jax.random.key(0)``).

  Returns the same kind as ``latents``; a ``jax.Array`` stays on its devices. Under multi-controller
  JAX, numpy and torch results are gathered onto every process.
  """
  if output_type not in OUTPUT_TYPES:
    raise ValueError(f"output_type: expected one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
  adapter = model.adapter
  array, kind = kinds.to_jax(latents, "latents")
  try:
    array = adapter.unpack_latents(array, video_shape)
  except ValueError as err:
    raise LatentsError(str(err)) from None
  layout = adapter.pipeline_layout if layout is None else layout
  array = to_vae_layout(array, layout, adapter.latent_channels, adapter.class_name)
  if check_finite:
    try:
      kinds.check_finite(array, "latents")
    except ValueError as err:
      raise LatentsError(str(err)) from None
  buffers = buffer_arguments(model)
  try:
    array = adapter.latents_for_decode(array, vae_dtype=model.compute_dtype, scaling_factor=scaling_factor, **buffers)
    noise = _decode_noise(array, generator) if adapter.takes_decode_timestep else None
    array, temb = adapter.decode_timestep_inputs(array, decode_timestep, decode_noise_scale, noise, **buffers)
  except CheckpointError:
    raise  # the VAE config cannot de-normalise (e.g. latents_mean of another length): not the latents' fault
  except ValueError as err:
    raise LatentsError(str(err)) from None
  video = model.decode(array, temb, check_finite=False, progress=progress)
  if output_type == "uint8":
    video = uint8_frames(video)
  return kinds.from_jax(video, kind)


def buffer_arguments(model: Any) -> dict[str, Any]:
  """``{"buffers": {name: array}}`` of the module buffers the model's latent scaling reads (LTX's
  ``latents_mean``/``latents_std``, weights of the checkpoint), or ``{}``: keyword arguments for the
  adapter's ``latents_for_decode`` / ``latents_from_encode``."""
  names = model.adapter.module_buffers
  return {"buffers": {name: model.params[name] for name in names}} if names else {}


def _decode_noise(latents: jax.Array, generator: Any) -> jax.Array:
  """``randn`` of the latents' shape: from a ``torch.Generator`` as diffusers' ``randn_tensor`` draws
  it on the CPU (the pipeline's own noise), else from a JAX key (default ``jax.random.key(0)``); a list
  holds one of those per sample, each drawing that sample's noise alone (``randn_tensor``'s rule)."""
  if isinstance(generator, list | tuple):
    if len(generator) != latents.shape[0]:
      raise ValueError(f"generator: a list needs one generator per sample ({latents.shape[0]}), got {len(generator)}")
    one = jax.ShapeDtypeStruct((1, *latents.shape[1:]), latents.dtype)
    return jnp.concatenate([_decode_noise(one, g) for g in generator])
  if generator is not None and type(generator).__module__.startswith("torch"):
    import torch

    dtype = torch.bfloat16 if latents.dtype == jnp.bfloat16 else torch.float32  # drawn in the latents' dtype
    noise = torch.randn(latents.shape, generator=generator, dtype=dtype)
    return jnp.asarray(noise.float().numpy()).astype(latents.dtype)
  key = jax.random.key(0) if generator is None else generator
  return jax.random.normal(key, latents.shape, jnp.float32).astype(latents.dtype)


# --- frames out -----------------------------------------------------------------------------------

OUTPUT_TYPES = ("video", "uint8")


@jax.jit
def uint8_frames(video: jax.Array) -> jax.Array:
  """``(B, 3, F, H, W)`` in ``[-1, 1]`` -> ``(B, F, H, W, 3)`` uint8 on the video's devices: exactly
  :func:`to_uint8_frames` (diffusers' video processor), without moving float video to the host.

  The processor's ``x * 0.5 + 0.5`` runs in the video's dtype, rounded once per op as torch does: for
  bfloat16 each op is computed in float32 and rounded to bfloat16 explicitly (``reduce_precision``,
  which XLA keeps; a plain bfloat16 op may be fused and kept at float32 precision, "excess precision").
  """
  x = video.astype(jnp.float32) * 0.5  # exact, also in bfloat16 (a power of two)
  x = x + 0.5
  if video.dtype == jnp.bfloat16:
    x = jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)
  elif video.dtype != jnp.float32:
    raise ValueError(f"video: expected float32 or bfloat16, got {video.dtype}")
  x = jnp.clip(x, 0.0, 1.0)
  frames = jnp.round(x * 255.0).astype(jnp.uint8)
  return jnp.transpose(frames, (0, 2, 3, 4, 1))



def to_uint8_frames(video: Any) -> np.ndarray:
  """``(B, 3, F, H, W)`` in ``[-1, 1]`` -> ``(B, F, H, W, 3)`` uint8, as diffusers' video processor.

  ``VideoProcessor.postprocess_video``: ``denormalize`` = ``(x * 0.5 + 0.5).clamp(0, 1)`` in the
  video's dtype, then float32, then ``(x * 255).round().astype(uint8)`` (``numpy_to_pil``). (diffusers'
  ``export_to_video`` truncates instead of rounding; we round, as the processor's PIL output does.)
  """
  host = video if isinstance(video, np.ndarray) else kinds.from_jax(kinds.to_jax(video, "video")[0], kinds.NUMPY)
  if host.ndim != 5 or host.shape[1] != 3:
    raise ValueError(f"video: expected (B, 3, F, H, W), got shape {tuple(host.shape)}")
  # Scalars of the video's own dtype: with a Python float, numpy would compute bfloat16 in float32.
  half, zero, one = (host.dtype.type(v) for v in (0.5, 0, 1))
  x = np.clip(host * half + half, zero, one).astype(np.float32)
  x = np.transpose(x, (0, 2, 3, 4, 1))
  return (x * 255).round().astype(np.uint8)


def output_paths(out: str | os.PathLike, batch: int, suffix: str = ".mp4") -> list[Path]:
  """``OUT.mp4`` for one video, ``OUT-0.mp4``, ``OUT-1.mp4``, … for ``batch > 1`` (``.png``: images)."""
  out = Path(out)
  if out.suffix.lower() != suffix:
    what = "a video" if suffix == ".mp4" else "an image"
    raise OutputPathError(f"{out}: expected an output path ending in {suffix} (the decode makes {what})")
  if batch == 1:
    return [out]
  return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(batch)]


def check_writable(paths: list[Path]) -> None:
  """Fails early (before any decoding) for an output that could not be written."""
  for parent in sorted({p.parent for p in paths}):
    if not parent.is_dir():
      raise OutputPathError(f"{parent}: output directory does not exist")
    try:
      with tempfile.NamedTemporaryFile(dir=parent, prefix=".probe-", suffix=".mp4"):
        pass
    except OSError as err:
      raise OutputPathError(f"{parent}: cannot write there ({err.strerror or err})") from err
  for path in paths:
    if path.is_dir():
      raise OutputPathError(f"{path}: is a directory")


def write_mp4(frames: np.ndarray, path: str | os.PathLike, *, fps: float = 8, quality: float = 5) -> Path:
  """Writes ``(F, H, W, 3)`` uint8 frames as H.264 MP4 (yuv420p) with imageio-ffmpeg.

  ``quality`` is imageio's 1–10 (10 best; libx264 ``crf = int((1 - q/10) * 51)``; 5 is diffusers'
  ``export_to_video`` default). The file is written under a temporary name in the same directory and
  renamed at the end, so a failed write leaves no partial MP4.
  """
  path = Path(path)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
  try:
    write_mp4_file(frames, tmp, fps=fps, quality=quality)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return path


def write_mp4_file(
  frames: np.ndarray, path: str | os.PathLike, *, fps: float = 8, quality: float = 5, metadata: dict[str, str] | None = None
) -> None:
  """:func:`write_mp4` straight to ``path`` (MP4 whatever its suffix), with container ``metadata`` tags."""
  try:
    import imageio_ffmpeg
  except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg") from err
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames: expected (F, H, W, 3) uint8, got {frames.dtype} {tuple(frames.shape)}")
  height, width = frames.shape[1:3]
  tags = [arg for name, value in (metadata or {}).items() for arg in ("-metadata", f"{name}={value}")]
  writer = imageio_ffmpeg.write_frames(
    str(path),
    (width, height),
    fps=fps,
    quality=quality,
    macro_block_size=2,  # yuv420p needs even sizes; the VAE's outputs always are (no rescale then)
    output_params=[*tags, "-f", "mp4"],  # a temporary name has no .mp4 suffix to infer it from
    ffmpeg_log_level="error",
  )
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame))
  writer.close()


def write_png(frame: np.ndarray, path: str | os.PathLike) -> Path:
  """Writes one ``(H, W, 3)`` uint8 image as PNG (Pillow), under a temporary name then renamed."""
  from PIL import Image

  path = Path(path)
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"frame: expected (H, W, 3) uint8, got {frame.dtype} {tuple(frame.shape)}")
  tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
  try:
    Image.fromarray(frame).save(tmp, format="PNG")
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return path


def generic_latents_for_decode(latents: Any, config: Any, scaling_factor: float | None = None) -> Any:
  """``latents / scaling_factor + shift_factor`` with the VAE config's values (``scaling_factor``
  overrides), as diffusers' image pipelines (Stable Diffusion, Flux, …) hand latents to ``vae.decode``;
  a config without ``scaling_factor`` leaves them as they are. Other pipelines' rules (per-channel
  statistics, packing) are an adapter's, as for CogVideoX and Wan."""
  factor = config.get("scaling_factor") if scaling_factor is None else scaling_factor
  shift = config.get("shift_factor")
  out = latents
  if isinstance(factor, int | float) and factor:
    out = out / factor
  if isinstance(shift, int | float) and shift:
    out = out + shift
  return out


def check_generic_latents(latents: Any, class_name: str) -> None:
  """Latents a class without an adapter decodes to files: 4-D (images) or 5-D (videos), floating."""
  if latents.ndim not in (4, 5) or 0 in latents.shape:
    raise LatentsError(
      f"latents: {class_name} decodes to files from 4-D (B, C, H, W: images) or 5-D (B, C, T, H, W: videos) latents, "
      f"got shape {tuple(latents.shape)}"
    )
  if not np.issubdtype(latents.dtype, np.floating) and latents.dtype.name != "bfloat16":
    raise LatentsError(f"latents: expected a floating dtype, got {latents.dtype}")


def generic_uint8_frames(
  runner: Any,
  latents: np.ndarray,
  *,
  raw: bool = False,
  scaling_factor: float | None = None,
  check_finite: bool = True,
  progress: ProgressArg = None,
) -> np.ndarray:
  """A class without an adapter: latents scaled as image pipelines do (:func:`generic_latents_for_decode`;
  ``raw``: as given), decoded, as uint8 frames ``(B, F, H, W, 3)`` (``F = 1`` for 4-D image latents)."""
  z = latents if raw else generic_latents_for_decode(latents.astype(np.float32), runner.config, scaling_factor)
  video = runner.decode(jnp.asarray(z), check_finite=check_finite, progress=progress)
  if video.ndim != latents.ndim or video.shape[1] != 3:
    raise LatentsError(f"{runner.class_name}.decode returned shape {tuple(video.shape)}: not (B, 3, …) images or videos")
  return np.asarray(uint8_frames(video[:, :, None] if latents.ndim == 4 else video))


def read_mp4(path: str | os.PathLike) -> np.ndarray:
  """``(F, H, W, 3)`` uint8 frames of a video file (imageio-ffmpeg)."""
  import imageio_ffmpeg

  reader = imageio_ffmpeg.read_frames(str(path))
  meta = next(reader)
  width, height = meta["size"]
  frames = [np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3) for frame in reader]
  return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
