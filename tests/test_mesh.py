"""Sharded decode (batch on dp, width on tp; 8 simulated CPU devices) equals unsharded; mesh errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, loaders, randn

import torchax_vae
from torchax_vae.core.mesh import MeshError, activation_spec, make_mesh, parse_mesh_spec

pytestmark = pytest.mark.multidevice
SHARDED_TOL = 1e-5  # max abs, fp32: GSPMD constraints change placement, not arithmetic


@pytest.fixture(scope="module", params=PATHS)
def path(request):
  return request.param


@pytest.fixture(scope="module")
def plain(tiny_dir, path):
  return loaders()[path](tiny_dir)


@pytest.fixture(scope="module")
def sharded(tiny_dir, path):
  return loaders()[path](tiny_dir, mesh="dp=2,tp=4")


def test_eight_devices_are_simulated():
  assert jax.device_count() == 8


# The first two are tests/test_torchax_vae.py's and test_native_vae.py's decode shapes: the unsharded
# runner loads those programs from the run's store; the tests below reuse these shapes' programs.
@pytest.mark.parametrize(
  "shape",
  [
    (2, 4, 4, 4, 4),  # divides both axes
    (1, 4, 2, 4, 6),  # batch 1 on dp=2 (the driver pads it), latent width 6 on tp=4 (GSPMD pads it)
    (3, 4, 4, 5, 5),
  ],
)
def test_sharded_equals_unsharded(plain, sharded, shape):
  z = randn(*shape, seed=shape[0] * 10 + shape[4])
  np.testing.assert_allclose(sharded.decode(z), plain.decode(z), atol=SHARDED_TOL, rtol=0)


def test_sharded_output_stays_split_on_device(sharded):
  out = sharded.decode(jnp.asarray(randn(2, 4, 4, 4, 4)))  # shape0's programs
  assert isinstance(out, jax.Array)
  assert len(out.sharding.device_set) == 8
  assert out.sharding.spec == activation_spec(sharded.mesh, "BCTHW")


def test_sharded_encode_equals_unsharded(plain, sharded):
  x = np.tanh(randn(2, 3, 9, 16, 24, seed=4))  # the encode parity tests' video (F = 9)
  np.testing.assert_allclose(sharded.encode(x), plain.encode(x), atol=SHARDED_TOL, rtol=0)


def test_uneven_batch_is_padded_then_dropped(plain, sharded):
  # Batch 3 on dp=2 runs as 4: a zero sample is added, then dropped.
  x = np.tanh(randn(3, 3, 9, 8, 16, seed=5))
  assert sharded._prepare(jnp.asarray(x)).shape[0] == 4
  # Non-partitionable threefry: noise drawn for the padded batch would differ in its first 3 rows.
  key = jax.random.key(7)
  with jax.threefry_partitionable(False):
    sampled = sharded.encode(x, key)
    expected = plain.encode(x, key)
  assert sampled.shape[:2] == (3, 4)
  np.testing.assert_allclose(sampled, expected, atol=SHARDED_TOL, rtol=0)
  # A jax.Array result keeps the caller's batch (replicated over dp: 3 does not split over 2).
  z = jnp.asarray(randn(3, 4, 4, 5, 5, seed=6))  # shape2's programs
  out = sharded.decode(z)
  assert isinstance(out, jax.Array) and out.shape[0] == 3
  np.testing.assert_allclose(out, plain.decode(np.asarray(z)), atol=SHARDED_TOL, rtol=0)


def test_mesh_object_is_accepted(tiny_dir, path, plain):
  devices = np.asarray(jax.devices()[:4]).reshape(1, 4)
  vae = loaders()[path](tiny_dir, mesh=jax.sharding.Mesh(devices, ("dp", "tp")))
  z = randn(1, 4, 2, 4, 6, seed=9)  # shape1's unsharded programs
  np.testing.assert_allclose(vae.decode(z), plain.decode(z), atol=SHARDED_TOL, rtol=0)


def test_mesh_spec_parsing():
  assert parse_mesh_spec("dp=2,tp=4") == {"dp": 2, "tp": 4}
  assert parse_mesh_spec(" tp=8 ") == {"tp": 8}
  assert make_mesh("dp=2").shape == {"dp": 2}


@pytest.mark.parametrize(
  ("spec", "match"),
  [
    ("dp=4,tp=4", r"needs 16 devices, but 8 cpu device\(s\) are visible.*xla_force_host_platform_device_count"),
    ("dp=2,sp=4", "unknown axis 'sp'; expected dp and/or tp"),
    ("dp=two", "expected comma-separated axis=size pairs"),
    ("dp=0", "expected comma-separated axis=size pairs"),
    ("dp=2,dp=2", "axis 'dp' given twice"),
    ("", "expected at least one axis"),
  ],
)
@pytest.mark.parametrize("path_name", PATHS)
def test_bad_mesh_is_a_clear_error(tiny_dir, spec, match, path_name):
  with pytest.raises(MeshError, match=match):
    loaders()[path_name](tiny_dir, mesh=spec)


def test_mesh_of_wrong_type_or_axes(tiny_dir):
  with pytest.raises(MeshError, match="expected a jax.sharding.Mesh, a string"):
    torchax_vae.load(tiny_dir, mesh=8)
  with pytest.raises(MeshError, match="expected an axis named dp or tp"):
    make_mesh(jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("x",)))
