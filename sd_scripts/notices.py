"""Keeping the libraries' import-time notices off the console, for the wizard and `python -m sd_scripts.train` alike.

Cheap to import (no torch): it must run before transformers and bitsandbytes are first imported.
"""

from __future__ import annotations

import logging
import os


def quiet_library_notices() -> None:
    """Keep the libraries' import-time notices (transformers' torchvision fallback, bitsandbytes' optional CPU
    kernels) off the console: they mean nothing to the user and bury the trainer's own messages. Errors still show."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
