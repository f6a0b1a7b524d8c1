"""The training loop and its parts, one idea per file.

`loop.py` runs one training from start to end; the other modules are the pieces it is made of (noise, loss,
optimizers, learning-rate schedules, precision, saving and resuming, samples, progress). They import torch at the
top, so only `sd_scripts.train` imports them, and only once a training starts.
"""
