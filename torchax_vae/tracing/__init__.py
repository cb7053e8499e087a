"""The torch side of the torchax path: imported only to trace a program the store does not hold.

It builds diffusers' unmodified module (parameters on the meta device) and traces its calls through
torchax: the op overrides and sharding hooks every torchax program gets (:mod:`.backend`), the
adapters' step builders (:mod:`.models`), the generic path's module and calls (:mod:`.generic_module`),
the import shim for torchax 0.0.13 on torch 2.13 (:mod:`._torchax_compat`) and the diffusers drop-in
for pipelines (:mod:`.diffusers_vae`). What it shares with the torch-free side
(:mod:`torchax_vae.runtime`) lives in :mod:`torchax_vae.runtime.contract`.
"""
