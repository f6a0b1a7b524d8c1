"""Writing LoRA files: formats, precision, atomic writes with mode 0644, `ss_*` / `modelspec.*` metadata, hashes.

`save_lora` and `training_metadata` are the two entry points the training loop uses; the tools reuse
`load_lora_file` and `save_lora`.
"""

from sd_scripts.saving.lora_file import load_lora_file, save_lora
from sd_scripts.saving.metadata import TrainingRun, model_file_metadata, training_metadata

__all__ = ["TrainingRun", "load_lora_file", "model_file_metadata", "save_lora", "training_metadata"]
