"""The trainer and the LoRA tools: kohya sd-scripts compatible, usable as a library and from the command line.

Train with `from sd_scripts.train import train` (or `python -m sd_scripts.train --config_file run.toml`). The
function is not re-exported here on purpose: `sd_scripts.train` is the module of that name, and a package attribute
that is sometimes the module and sometimes the function would be a trap. Importing this package is cheap.
"""

import os

# Torch's OpenMP threads spin while they wait for work unless told otherwise. Beside the wizard's window and other
# programs on a few cores that spinning starves everyone, the trainer included (a 2-thread convolution loop took 30 s
# spinning and 0.5-1.7 s sleeping on a busy 2-core machine). It must be set before torch is first imported, which is
# why it is here, in the one module every entry point imports first; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
