"""The trainer and the LoRA tools: kohya sd-scripts compatible, usable as a library and from the command line.

Train with `from sd_scripts.train import train` (or `python -m sd_scripts.train --config_file run.toml`). The
function is not re-exported here on purpose: `sd_scripts.train` is the module of that name, and a package attribute
that is sometimes the module and sometimes the function would be a trap. Importing this package is cheap.
"""
