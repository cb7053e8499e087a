"""``python -m torchax_vae decode LATENTS -o OUT.mp4`` (see ``torchax_vae.cli``)."""

import sys

from .cli import main

sys.exit(main())
