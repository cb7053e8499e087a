"""The decode job: latent files (an encode job's, or any the ``decode`` command reads) -> MP4s (PNGs for
an image VAE), decoded as the single-file command does, files of one shape batched together."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .commit import JOB_KEY, write_atomically
from .encode import FORMAT, sample_key
from .inputs import Item, ItemError
from .running import _DEFAULT_THREADS, JobSummary, _first_line, _Plan, _run_job


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  layout: str | None = None  # None: the file's own (an encode job's metadata), else the model's pipeline layout
  key: str | None = None  # tensor name in files holding several
  scaling_factor: float | None = None
  raw: bool = False  # classes without an adapter: latents as the VAE takes them
  fps: float = 8
  quality: float = 5
  # LTX: packed (B, S, C) files unpack to this video's (frames, height, width); a timestep-conditioned
  # decoder's decode_timestep / decode_noise_scale (LTXPipeline's arguments), its noise drawn per
  # sample from fold_in(fold_in(key(noise_seed), crc32(name)), i): independent of batching and runs.
  video_shape: tuple[int, int, int] | None = None
  decode_timestep: float | None = None
  decode_noise_scale: float | None = None
  noise_seed: int = 0


def decode_noise_keys(seed: int, item: Item, count: int) -> list[jax.Array]:
  """The decode-noise keys of an item's ``count`` samples (:class:`DecodeSettings`)."""
  key = sample_key(seed, item)
  return [jax.random.fold_in(key, i) for i in range(count)]


def decode_job(
  runner: Any,
  items: list[Item],
  out_dir: str | os.PathLike,
  settings: DecodeSettings = DecodeSettings(),
  *,
  model: dict[str, Any] | None = None,
  batch: int = 1,
  process_index: int | None = None,
  process_count: int | None = None,
  readers: int | None = None,
  ahead: int = 2,
  writers: int | None = None,
  progress: bool = False,
) -> JobSummary:
  """Decodes every latent file of ``items`` (this process's share) to ``OUT_DIR/<name>.mp4`` (an image
  VAE's 4-D latents: ``.png``), as :func:`~torchax_vae.pipeline.decode_latents` and the ``decode``
  command do (the pipeline's layout and scaling; an encode job's output in the layout its metadata
  names). A file holding a batch of B makes ``<name>-0.mp4`` … ``<name>-<B-1>.mp4``. Files of one shape
  are decoded together, up to ``batch`` files a call (the chunk)."""
  from .. import pipeline

  out_dir = Path(out_dir)
  adapter = getattr(runner, "adapter", None)

  timestep = adapter is not None and adapter.takes_decode_timestep

  def read(item: Item) -> tuple[np.ndarray, str, list | None]:
    try:
      latents = pipeline.load_latents(item.source, key=settings.key)
      if adapter is not None:  # LTX's packed tokens (the model says how; other models pass 5-D through)
        latents = np.asarray(adapter.unpack_latents(latents, settings.video_shape))
    except pipeline.LatentsError as err:
      raise ItemError(str(err)) from None
    except ValueError as err:
      raise ItemError(f"{item.source}: {err}") from None
    layout = settings.layout or _file_layout(item.source) or (adapter.pipeline_layout if adapter else pipeline.VAE_LAYOUT)
    try:
      if adapter is not None:
        pipeline.check_latents(latents, layout, adapter.latent_channels, adapter.class_name)
      else:
        pipeline.check_generic_latents(latents, runner.class_name)
    except pipeline.LatentsError as err:
      raise ItemError(f"{item.source}: {err}") from None
    if not np.all(np.isfinite(latents.astype(np.float32))):
      raise ItemError(f"{item.source}: latents hold NaN or infinite values")
    return latents, layout, decode_noise_keys(settings.noise_seed, item, latents.shape[0]) if timestep else None

  def outputs(item: Item, value: tuple[np.ndarray, str] | None) -> list[Path]:
    suffix = ".png" if value is not None and value[0].ndim == 4 else ".mp4"
    count = 1 if value is None else value[0].shape[0]
    return pipeline.output_paths(out_dir / f"{item.name}{suffix}", count, suffix)

  def expected(item: Item) -> list[Path] | None:
    """The outputs an earlier run made (their count is the file's batch, read from its header)."""
    count = _latent_batch(item.source, settings.key)
    if count is None:
      return None
    for suffix in (".mp4", ".png"):
      paths = pipeline.output_paths(out_dir / f"{item.name}{suffix}", count, suffix)
      if paths[0].exists():
        return paths
    return None

  def run(values: list[tuple[np.ndarray, str, list | None]]) -> list[np.ndarray]:
    sizes = [latents.shape[0] for latents, _, _ in values]
    latents = np.concatenate([latents for latents, _, _ in values])
    layout = values[0][1]
    try:
      if adapter is not None:
        frames = pipeline.decode_latents(
          runner, latents, layout=layout, scaling_factor=settings.scaling_factor, check_finite=False, output_type="uint8",
          decode_timestep=settings.decode_timestep if timestep else None,
          decode_noise_scale=settings.decode_noise_scale if timestep else None,
          generator=[key for _, _, keys in values for key in keys] if timestep else None,
        )  # (B, F, H, W, 3) uint8  # fmt: skip
      else:
        frames = pipeline.generic_uint8_frames(
          runner, latents, raw=settings.raw, scaling_factor=settings.scaling_factor, check_finite=False
        )
    except (ValueError, TypeError) as err:
      raise ItemError(f"decode: {_first_line(err)}") from None
    bounds = np.cumsum([0, *sizes])
    return [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

  def write(item: Item, value: Any, frames: np.ndarray, key: str, paths: list[Path]) -> int:
    for video, path in zip(frames, paths):
      if path.suffix == ".png":
        write_atomically(path, lambda tmp, video=video: _write_png(video[0], tmp, key))
      else:
        write_atomically(path, lambda tmp, video=video: _write_mp4(video, tmp, key, settings))
    return int(frames.shape[0] * frames.shape[1])

  plan = _Plan(
    "decode",
    settings=dataclasses.asdict(settings),
    outputs=outputs,
    expected=expected,
    read=read,
    shape_of=lambda value: (value[0].shape[1:], str(value[0].dtype), value[1]),
    run=run,
    write=write,
  )
  return _run_job(
    plan, runner, items, out_dir, model=model, batch=batch, process_index=process_index, process_count=process_count,
    readers=readers, ahead=ahead, writers=writers or _DEFAULT_THREADS,  # MP4 encoding is host work: as many as the cores
    progress=progress,
  )  # fmt: skip


def _file_layout(path: Path) -> str | None:
  """The layout an encode job's output names in its metadata (``None`` for any other file)."""
  if path.suffix.lower() != ".safetensors":
    return None
  try:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
      metadata = handle.metadata() or {}
  except Exception:
    return None
  return metadata.get("layout") if metadata.get("format") == FORMAT else None


def _latent_batch(path: Path, key: str | None) -> int | None:
  """The leading dim of a latent file's tensor from its header alone (``None`` if it cannot be read)."""
  from .. import pipeline

  try:
    if path.suffix.lower() == ".safetensors":
      from safetensors import safe_open

      with safe_open(str(path), framework="numpy") as handle:
        name = pipeline._pick_key(list(handle.keys()), key, path)
        return int(handle.get_slice(name).get_shape()[0])
    if path.suffix.lower() == ".npy":
      return int(np.load(path, mmap_mode="r").shape[0])
    return int(pipeline.load_latents(path, key=key).shape[0])
  except Exception:
    return None


def _write_mp4(frames: np.ndarray, tmp: Path, key: str, settings: DecodeSettings) -> None:
  from ..pipeline import write_mp4_file

  write_mp4_file(frames, tmp, fps=settings.fps, quality=settings.quality, metadata={"comment": key})


def _write_png(frame: np.ndarray, tmp: Path, key: str) -> None:
  from PIL import Image, PngImagePlugin

  info = PngImagePlugin.PngInfo()
  info.add_text(JOB_KEY, key)
  Image.fromarray(frame).save(tmp, format="PNG", pnginfo=info)
