"""The encode job: videos read with ffmpeg (resized, cropped, cut to the frames asked for) -> one
safetensors latent file per video, with the job key and what was taken in its metadata."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .commit import JOB_KEY, write_atomically
from .inputs import Item, ItemError, JobInputError
from .running import JobSummary, _first_line, _Plan, _run_job

LATENTS_KEY = "latents"
FORMAT = "torchax_vae.latents/1"  # the metadata "format" of an encode job's output


@dataclasses.dataclass(frozen=True)
class EncodeSettings:
  size: tuple[int, int] | None = None  # (H, W): resize the short side to cover it, centre-crop
  frames: int | None = None  # frames per video (None: the most the model's rule allows)
  fps: float | None = None  # resample to this rate (None: consecutive frames of the source)
  sample_seed: int | None = None  # a keyed posterior sample instead of the mode


def check_encode_settings(adapter: Any, settings: EncodeSettings) -> None:
  """:class:`JobInputError` for a size or frame count the model cannot take, before anything runs."""
  s = adapter.spatial_compression
  if settings.size is not None:
    h, w = settings.size
    if h < 1 or w < 1 or h % s or w % s:
      raise JobInputError(f"--size {h},{w}: expected positive multiples of {s} ({adapter.class_name}'s spatial compression)")
  if settings.frames is not None:
    valid = adapter.encodable_num_frames(settings.frames)
    if settings.frames < 1 or valid != settings.frames:
      above = next(n for n in range(settings.frames + 1, settings.frames + 65) if adapter.encodable_num_frames(n) == n)
      nearest = f"the nearest are {valid} and {above}" if valid else f"the least is {above}"
      raise JobInputError(
        f"--frames {settings.frames}: {adapter.class_name} encodes 1 + k * (its time compression) frames with "
        f"none dropped; {nearest}"
      )
  if settings.fps is not None and not settings.fps > 0:
    raise JobInputError(f"--fps {settings.fps}: expected a positive frame rate")


def read_video(path: Path, settings: EncodeSettings, adapter: Any) -> tuple[np.ndarray, dict[str, Any]]:
  """``(F, H, W, 3)`` uint8 frames of ``path`` as ``settings`` ask (ffmpeg filters, streamed: ffmpeg
  stops after ``settings.frames``), and what was taken; :class:`ItemError` for what cannot be used."""
  import imageio_ffmpeg

  logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)  # "frame size differs from the source": asked for
  filters = []
  if settings.fps is not None:
    filters.append(f"fps={settings.fps:g}")
  if settings.size is not None:
    h, w = settings.size
    # Cover (H, W) keeping the aspect (the other side rounded to even), then cut the centre.
    filters.append(f"scale='if(gt(a,{w}/{h}),-2,{w})':'if(gt(a,{w}/{h}),{h},-2)':flags=bicubic")
    filters.append(f"crop={w}:{h}")
  params = (["-vf", ",".join(filters)] if filters else []) + (["-frames:v", str(settings.frames)] if settings.frames else [])
  try:
    reader = imageio_ffmpeg.read_frames(str(path), output_params=params or None)
    meta = next(reader)
  except (OSError, RuntimeError, StopIteration) as err:
    raise ItemError(f"{path}: not a readable video ({_ffmpeg_reason(err)})") from None
  width, height = meta["size"]
  frames: list[np.ndarray] = []
  try:
    for buffer in reader:
      frames.append(np.frombuffer(buffer, np.uint8).reshape(height, width, 3))
      if settings.frames is not None and len(frames) == settings.frames:
        break
  except RuntimeError as err:
    raise ItemError(f"{path}: the video breaks off after {len(frames)} frames ({_ffmpeg_reason(err)})") from None
  finally:
    reader.close()
  wanted = settings.frames or adapter.encodable_num_frames(len(frames))
  if len(frames) < max(wanted, 1):
    raise ItemError(
      f"{path}: too few frames: {len(frames)}"
      + (f" at {settings.fps:g} fps" if settings.fps else "")
      + f", {wanted or 1} needed"
    )
  s = adapter.spatial_compression
  if height % s or width % s:
    raise ItemError(f"{path}: frames of {width}x{height} (W x H) are not multiples of {s}; pass --size H,W to resize and crop")
  info = {
    "source_width": meta["source_size"][0],
    "source_height": meta["source_size"][1],
    "source_fps": meta.get("fps"),
    "fps": settings.fps or meta.get("fps"),
  }
  return np.stack(frames[:wanted]), info


def _ffmpeg_reason(err: BaseException) -> str:
  """The telling line of an imageio-ffmpeg error (ffmpeg's own message, not the wrapper's)."""
  lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("===")]
  for line in reversed(lines):
    if "Invalid data" in line or "moov atom" in line or "not found" in line or "No such file" in line:
      return line
  return lines[-1] if lines else type(err).__name__


@jax.jit
def _frames_to_video(frames: jax.Array) -> jax.Array:
  """``(B, F, H, W, 3)`` uint8 -> ``(B, 3, F, H, W)`` float32 in ``[-1, 1]``: diffusers'
  ``VideoProcessor.preprocess_video`` (``x / 255``, then ``2 * x - 1``, in float32)."""
  x = frames.astype(jnp.float32) / 255.0
  return jnp.transpose(2.0 * x - 1.0, (0, 4, 1, 2, 3))


def sample_key(seed: int, item: Item) -> jax.Array:
  """The PRNG key of one item's posterior sample: ``fold_in(key(seed), crc32(name))``, so an item's
  sample depends on the seed and its output name, not on its batch, process or run."""
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(item.name.encode()) & 0x7FFFFFFF)


def model_identity(directory: Path) -> dict[str, Any]:
  """The checkpoint as job keys see it: its config.json (without diffusers' bookkeeping) and, per
  weights file, name, size and a digest of its first and last MiB (a re-trained VAE of the same config
  differs there; hashing every byte would cost a second per GB at each start)."""
  from ..core.checkpoint import read_raw_config, weight_files

  config = {k: v for k, v in read_raw_config(directory).items() if k not in ("_diffusers_version", "_name_or_path")}
  weights = {}
  for file in weight_files(directory):
    size = file.stat().st_size
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
      digest.update(handle.read(1 << 20))
      handle.seek(max(0, size - (1 << 20)))
      digest.update(handle.read(1 << 20))
    weights[file.name] = [size, digest.hexdigest()]
  config_sha256 = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
  return {"class": config.get("_class_name"), "config_sha256": config_sha256, "weights": weights}


def encode_job(
  runner: Any,
  items: list[Item],
  out_dir: str | os.PathLike,
  settings: EncodeSettings = EncodeSettings(),
  *,
  model: dict[str, Any] | None = None,
  batch: int = 1,
  process_index: int | None = None,
  process_count: int | None = None,
  readers: int | None = None,
  ahead: int = 2,
  writers: int = 1,
  progress: bool = False,
) -> JobSummary:
  """Encodes every video of ``items`` (this process's share) to ``OUT_DIR/<name>.safetensors``.

  Each output holds ``latents`` ``(1, …)`` in the model's pipeline layout and scaling
  (:meth:`~torchax_vae.core.models.base.VideoVAE.latents_from_encode`: CogVideoX ``(1, T, C, H, W)``
  ``* scaling_factor``; Wan ``(1, C, T, H, W)`` normalised), in the runner's dtype, and metadata (all
  strings): the source, its size and mtime, the frames, size and fps taken, the model's class and
  config hash, dtype, layout, and the sample seed (``posterior``: ``mode`` or ``sample``). Decoding it
  with ``python -m torchax_vae decode`` (or :func:`~torchax_vae.pipeline.decode_latents`) gives the
  video back. ``model``: :func:`model_identity` of the checkpoint (part of every job key).
  """
  from .. import pipeline

  adapter = runner.adapter
  check_encode_settings(adapter, settings)
  out_dir = Path(out_dir)
  dtype = jnp.dtype(runner.compute_dtype).name
  buffers = pipeline.buffer_arguments(runner)  # LTX's latent statistics (weights)

  def run(values: list[tuple[np.ndarray, dict, Item]]) -> list[np.ndarray]:
    frames = np.stack([frames for frames, _, _ in values])  # (B, F, H, W, 3) uint8: a quarter of float32's bytes
    video = _frames_to_video(jnp.asarray(frames)).astype(runner.compute_dtype)
    try:
      moments = runner.encode_moments(video, check_finite=False)  # uint8 frames are finite
    except ValueError as err:
      raise ItemError(f"encode: {_first_line(err)}") from None
    if settings.sample_seed is None:
      latents = adapter.posterior(moments, None)
    else:
      keys = jnp.stack([sample_key(settings.sample_seed, item) for _, _, item in values])
      latents = jax.vmap(lambda m, k: adapter.posterior(m[None], k)[0])(moments, keys)
    return list(np.asarray(adapter.latents_from_encode(latents, **buffers)))  # blocks until the device is done

  def write(item: Item, value: Any, latents: np.ndarray, key: str, paths: list[Path]) -> int:
    frames, info, _ = value
    stat = item.source.stat()
    metadata = {
      "format": FORMAT, JOB_KEY: key, "source": str(item.source), "source_size": stat.st_size,
      "source_mtime_ns": stat.st_mtime_ns, "frames": frames.shape[0], "height": frames.shape[1],
      "width": frames.shape[2], "first_frame": 0, **info, "model_class": adapter.class_name,
      "model_config_sha256": (model or {}).get("config_sha256", ""), "dtype": dtype,
      "layout": adapter.pipeline_layout, "scaling": f"pipeline latents (its decode: {adapter.describe_latent_scaling()})",
      "posterior": "mode" if settings.sample_seed is None else "sample",
      "sample_seed": "" if settings.sample_seed is None else settings.sample_seed,
    }  # fmt: skip
    _write_safetensors(paths[0], latents[None], {k: str(v) for k, v in metadata.items()})
    return int(frames.shape[0])

  def output(item: Item, _value: Any = None) -> list[Path]:
    return [out_dir / f"{item.name}.safetensors"]

  plan = _Plan(
    "encode",
    settings=dataclasses.asdict(settings),
    outputs=output,
    expected=output,
    read=lambda item: (*read_video(item.source, settings, adapter), item),
    shape_of=lambda value: value[0].shape,
    run=run,
    write=write,
  )
  return _run_job(
    plan, runner, items, out_dir, model=model, batch=batch, process_index=process_index, process_count=process_count,
    readers=readers, ahead=ahead, writers=writers, progress=progress,
  )  # fmt: skip


def _write_safetensors(path: Path, array: np.ndarray, metadata: dict[str, str]) -> None:
  """One tensor as safetensors, byte for byte the same for the same values: the header's keys sorted
  (safetensors' own writer orders metadata by a per-process hash, so a re-run's file would differ)."""
  array = np.ascontiguousarray(array)
  dtype = _SAFETENSORS_DTYPES[array.dtype.name]
  header = {
    "__metadata__": dict(sorted(metadata.items())),
    LATENTS_KEY: {"dtype": dtype, "shape": list(array.shape), "data_offsets": [0, array.nbytes]},
  }
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it

  def write(tmp: Path) -> None:
    with open(tmp, "wb") as handle:
      handle.write(len(encoded).to_bytes(8, "little"))
      handle.write(encoded)
      handle.write(memoryview(array.reshape(-1).view(np.uint8)))

  write_atomically(path, write)


_SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
