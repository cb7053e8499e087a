"""Dataset jobs: videos -> latent files (``python -m torchax_vae encode``) and latent files -> videos
(``python -m torchax_vae decode INPUT... -o OUT_DIR``), resumable, on every device of every host.

    items = collect_inputs(["clips/"], VIDEO_SUFFIXES)            # [Item(0, clips/a.mp4, "a"), …]
    summary = encode_job(runner, items, "latents/", EncodeSettings(size=(480, 720), frames=49))

What a long job needs, and where it is:

* **Exactly once.** Each output is written under a hidden temporary name beside it and renamed
  (:func:`.commit._publish`); an output carries its *job key* (source path, size and mtime, model, settings)
  in its own metadata. A re-run takes an output whose key matches as done and redoes every other.
  Items go in fixed *chunks* of ``batch`` consecutive inputs, and a chunk with any output missing is
  read and run whole again, so every output is computed in the batch an uninterrupted run computes it
  in: a killed and re-run job is bit-identical to one that was not killed.
* **Bad inputs do not stop the job.** An unreadable or short video, a latent file of the wrong
  channels, … is an :class:`ItemError`: recorded in the manifest with its reason and skipped.
* **A manifest** (JSONL in OUT_DIR: ``manifest.jsonl``; ``manifest.<i>-of-<n>.jsonl`` per process
  of a multi-process job): one line per input, ``done`` (``reused`` when a re-run found it complete)
  or ``failed`` with the reason; appended as the job goes, compacted to the last line per input at
  the end.
* **Host work beside device work.** A bounded prefetching reader (:class:`Prefetcher`: ``ahead``
  chunks read on a thread pool while the device runs the current one) and background writers; the
  summary says how long the device waited for input (``input_wait_s``) and for the writers.
* **Many hosts.** Under JAX's multi-controller runtime each process takes chunks ``i, i + n, …``
  (``i`` its ``jax.process_index()``, ``n`` the process count) and runs them on its own devices: no
  coordinator, no collective.

Videos are read with ffmpeg (imageio-ffmpeg's binary), streamed: ffmpeg picks the frame rate
(``fps`` filter), resizes the short side and centre-crops (``scale``/``crop``, bicubic), and stops
after the frames asked for; frames come as ``(F, H, W, 3)`` uint8 and are normalised on the device
as diffusers' ``VideoProcessor.preprocess_video`` does (``x / 255 * 2 - 1`` in float32).

The package, by concern: ``inputs`` (what a job reads, its chunks and shares), ``commit`` (exactly-once
writing and job keys), ``manifest``, ``running`` (the shared job loop, reading ahead, writing behind),
``encode`` and ``decode`` (the two jobs).
"""

from __future__ import annotations

import warnings

from .commit import JOB_KEY, job_key, stored_job_key, write_atomically
from .decode import DecodeSettings, decode_job, decode_noise_keys
from .encode import (
  FORMAT,
  LATENTS_KEY,
  EncodeSettings,
  check_encode_settings,
  encode_job,
  model_identity,
  read_video,
  sample_key,
)
from .inputs import LIST_SUFFIXES, VIDEO_SUFFIXES, Item, ItemError, JobInputError, chunks, collect_inputs, process_share
from .manifest import Manifest
from .running import JobSummary, Prefetcher, Writers

# ffmpeg (reading and writing) is started by subprocess's fork+exec, which runs no Python in the child
# before exec: JAX's warning about fork in a multithreaded process does not apply to it.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

__all__ = [
  "FORMAT", "JOB_KEY", "LATENTS_KEY", "LIST_SUFFIXES", "VIDEO_SUFFIXES", "DecodeSettings", "EncodeSettings", "Item",
  "ItemError", "JobInputError", "JobSummary", "Manifest", "Prefetcher", "Writers", "check_encode_settings", "chunks",
  "collect_inputs", "decode_job", "decode_noise_keys", "encode_job", "job_key", "model_identity", "process_share",
  "read_video", "sample_key", "stored_job_key", "write_atomically",
]  # fmt: skip
