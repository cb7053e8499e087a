"""Measurements of both JAX paths against plain PyTorch."""
