"""The names of everything a run writes, sd-scripts style, and the check that none of them is already taken.

`<name>.safetensors` is the final LoRA, `<name>-000003.safetensors` the save after epoch 3,
`<name>-step00000120.safetensors` the save after step 120 (also what a stopped run leaves); each may have a
resumable state folder beside it named like the file with `-state` instead of the extension. `<name>-loss.csv` and
`<name>-loss.png` are the run's loss table and plot (sd_scripts.training.logs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sd_scripts.errors import UserFacingError

SAMPLE_FOLDER = "sample"
DEFAULT_OUTPUT_NAME = "last"  # sd-scripts' name when output_name is not given


@dataclass(frozen=True)
class OutputNames:
    folder: Path
    name: str
    extension: str  # "safetensors" | "ckpt" | "pt"

    def final(self) -> Path:
        return self.folder / f"{self.name}.{self.extension}"

    def after_epoch(self, epoch: int) -> Path:
        return self.folder / f"{self.name}-{epoch:06d}.{self.extension}"

    def after_step(self, step: int) -> Path:
        return self.folder / f"{self.name}-step{step:08d}.{self.extension}"

    def loss_table(self) -> Path:
        return self.folder / f"{self.name}-loss.csv"

    def loss_plot(self) -> Path:
        return self.folder / f"{self.name}-loss.png"

    @staticmethod
    def state_dir(lora_path: Path) -> Path:
        return lora_path.with_name(f"{lora_path.stem}-state")

    def samples(self) -> Path:
        return self.folder / SAMPLE_FOLDER

    def output_pattern(self) -> re.Pattern[str]:
        """Every name above in the output folder, for finding what an interrupted write of this run left behind."""
        name, extension = re.escape(self.name), re.escape(self.extension)
        return re.compile(rf"{name}(-\d{{6}}|-step\d{{8}})?(\.{extension}|-state)|{name}-loss\.(csv|png)")

    def sample_pattern(self) -> re.Pattern[str]:
        """The names of this run's samples in the sample folder (`<name>_<time>_<label>_<prompt>_<seed>.png`)."""
        return re.compile(rf"{re.escape(self.name)}_\d{{14}}_\w+_\d+_\d+\.png")


def check_outputs_free(paths: list[Path]) -> None:
    """Refuse to start when a file this run will write exists already: the user's earlier LoRA stays untouched."""
    for path in paths:
        if path.exists():
            raise UserFacingError(
                f"{path} already exists; choose another output name or folder so the earlier file is not overwritten."
            )
