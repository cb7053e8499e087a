"""The torch-free side of the torchax path: what a warm start runs.

Nothing here imports torch, torchax or diffusers at module level. The runners (:mod:`.adapters`,
:mod:`.generic`) call compiled programs with JAX arrays; what identifies their programs
(:mod:`.fingerprint`) and what checks a checkpoint's weights (manifests stored beside the programs)
is had without building the module. Only a program missing from the store imports
:mod:`torchax_vae.tracing` (the torch side) to build the module and trace it.

:mod:`.contract` holds what both sides agree on (layouts, call kinds, output keys): the one module
either imports, so neither imports the other at module level.
"""
