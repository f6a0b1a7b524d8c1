"""The run's logs: TensorBoard event files when `logging_dir` is set, and always a loss table and plot beside the LoRA.

TensorBoard follows sd-scripts (train_network.py through accelerate's tracker), so dashboards made for it work here:
the events go to `<logging_dir>/<log_prefix><YYYYmmddHHMMSS>/<log_tracker_name or "network_train">/`, each optimizer
step logs `loss/current`, `loss/average` and `lr/<group>` for every parameter group (`textencoder`, `unet`, or
`unet_block<i>` with block learning rates), plus `lr/d*lr/<group>` where the optimizer adapts its step size (the group
has a `d`: DAdaptation, Prodigy); each epoch logs `loss/epoch_average` at x = the epoch; each sample image is logged as
`sample_<prompt index>` (sd-scripts' name for it in wandb; it sends none to TensorBoard).

`loss/average` is the mean loss of the epoch so far (the figure the Step events and the progress window show);
sd-scripts' is the mean of the last epoch's worth of batches: the same during the first epoch, smoother later.

Without TensorBoard too, `<output_name>-loss.csv` (step, epoch, loss, lr of the first group) is rewritten atomically at
every save and at the end, so a crash keeps the table of what was saved, and `<output_name>-loss.png` is drawn at the
end (`sd_scripts.training.loss_plot`). A resumed run continues the table of the run it resumes.

Only `log_with` tensorboard (or nothing) is accepted: wandb is not a dependency of this trainer, so asking for it is
refused before the base model loads instead of failing later or being ignored.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.events import EpochEnd, SampleMade, Step
from sd_scripts.networks.blocks import block_index
from sd_scripts.saving.atomic import write_atomically
from sd_scripts.training.loss_plot import draw_loss_plot, plot_title
from sd_scripts.training.outputs import DEFAULT_OUTPUT_NAME

if TYPE_CHECKING:
    from sd_scripts.networks.base import Network

DEFAULT_TRACKER_NAME = "network_train"  # train_network.py's tracker name: accelerate's subfolder of the run folder
TABLE_COLUMNS = ("step", "epoch", "loss", "lr")
LOG_WITH_TENSORBOARD = "tensorboard"


def check_log_settings(args: TrainArgs) -> None:
    """Refuse a logging setting that cannot work, before anything heavy loads."""
    if args.log_with in (None, "", LOG_WITH_TENSORBOARD):
        if args.log_with and not args.logging_dir:
            raise UserFacingError("log_with is tensorboard but no logging_dir is set; set logging_dir to the folder "
                                  "for the TensorBoard logs.")
        return
    if args.log_with in ("wandb", "all"):
        raise UserFacingError(f"log_with {args.log_with} asks for wandb, which this trainer does not include; set "
                              "log_with to tensorboard with a logging_dir, or leave it empty.")
    raise UserFacingError(f"log_with {args.log_with!r} is not a logger this trainer knows; set it to tensorboard or "
                          "leave it empty.")


def tensorboard_folder(args: TrainArgs, started: time.struct_time) -> Path | None:
    """Where this run's event files go, named as sd-scripts names it; None without a logging_dir."""
    if not args.logging_dir:
        return None
    run = f"{args.log_prefix or ''}{time.strftime('%Y%m%d%H%M%S', started)}"
    return Path(args.logging_dir) / run / (args.log_tracker_name or DEFAULT_TRACKER_NAME)


def group_names(param_groups: Sequence[dict], network: Network) -> list[str]:
    """sd-scripts' name of each optimizer parameter group: textencoder, unet, or unet_block<i> per U-Net block.

    Found from which part each group's parameters belong to, so it holds for every network type. Should a network
    ever give two groups one name, all are named group<i> as sd-scripts does when it has no names.
    """
    text_encoder = {id(p) for lora in network.text_encoder_loras for p in lora.parameters()}
    unet_lora_of = {id(p): lora for lora in network.unet_loras for p in lora.parameters()}
    unet_groups = sum(1 for group in param_groups if id(group["params"][0]) in unet_lora_of)
    names = []
    for group in param_groups:
        first = id(group["params"][0])
        if first in text_encoder:
            names.append("textencoder")
        elif unet_groups > 1:
            block = block_index(getattr(unet_lora_of[first], "lora_name", ""))
            names.append(f"unet_block{-1 if block is None else block}")  # -1: sd-scripts' index outside the blocks
        else:
            names.append("unet")
    if len(set(names)) < len(names):
        names = [f"group{index}" for index in range(len(names))]
    return names


@dataclass(frozen=True)
class LossRow:
    step: int
    epoch: int
    loss: float
    lr: float


def read_loss_table(path: Path) -> list[LossRow]:
    """The rows of a loss table this trainer wrote; a file of another shape is refused (it is not this run's)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != TABLE_COLUMNS:
                raise ValueError(f"columns {reader.fieldnames}")
            return [LossRow(int(row["step"]), int(row["epoch"]), float(row["loss"]), float(row["lr"]))
                    for row in reader]
    except (ValueError, TypeError) as problem:
        raise UserFacingError(f"{path} is not a loss table of this trainer ({problem}); move it away or choose "
                              "another output name.") from None


def write_loss_table(path: Path, rows: Sequence[LossRow]) -> None:
    """The table as CSV, floats written exactly (repr), replacing the file in one step."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    writer.writerows((row.step, row.epoch, repr(row.loss), repr(row.lr)) for row in rows)
    data = text.getvalue().encode("utf-8")
    write_atomically(path, lambda temporary: temporary.write_bytes(data))


class RunLogs:
    """Everything one run logs; the loop calls `record_step` after each Step event, `record_sample`,
    `record_epoch`, `save_table` with every save, `finish` before its Finished event, and `close` however it ends.

    With `write=False` (the processes other than the main one in data-parallel training) it writes no file."""

    def __init__(self, *, table: Path, plot: Path, title: str, tensorboard: Path | None, optimizer: Any,
                 lr_scheduler: Any, group_names: list[str], history: list[LossRow], write: bool = True) -> None:
        self.table, self.plot, self.title, self.write = table, plot, title, write
        self.optimizer, self.lr_scheduler, self.group_names = optimizer, lr_scheduler, group_names
        self.rows = history
        self.writer = None
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard))

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_step(self, event: Step) -> None:
        self.rows.append(LossRow(event.step, event.epoch, event.loss, event.lr))
        if self.writer is None:
            return
        scalars = {"loss/current": event.loss, "loss/average": event.average_loss}
        for name, lr, group in zip(self.group_names, self.lr_scheduler.get_last_lr(), self.optimizer.param_groups):
            scalars[f"lr/{name}"] = float(lr)
            if group.get("d") is not None:
                scalars[f"lr/d*lr/{name}"] = float(group["d"]) * float(group["lr"])
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, event.step)

    def record_sample(self, event: SampleMade, prompt_index: int) -> None:
        if self.writer is None:
            return
        import numpy
        from PIL import Image

        with Image.open(event.path) as image:
            pixels = numpy.asarray(image.convert("RGB"))
        self.writer.add_image(f"sample_{prompt_index}", pixels, event.step, dataformats="HWC")

    def record_epoch(self, event: EpochEnd) -> None:
        if self.writer is not None:
            self.writer.add_scalar("loss/epoch_average", event.average_loss, event.epoch)

    def save_table(self) -> None:
        if not self.write:
            return
        write_loss_table(self.table, self.rows)
        if self.writer is not None:
            self.writer.flush()

    def finish(self) -> Path:
        """The table and the plot of the whole run, written; returns the plot's path."""
        self.save_table()
        if self.write:
            draw_loss_plot([row.step for row in self.rows], [row.loss for row in self.rows], self.plot, title=self.title)
        return self.plot

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_run_logs(args: TrainArgs, *, table: Path, plot: Path, network: Network, optimizer: Any, lr_scheduler: Any,
                  resumed_at: int | None, write: bool = True) -> RunLogs:
    """The logs of a run starting now; `resumed_at` is the step a resumed run continues from (its table goes on).

    `write=False`: the logs of a process that is not the main one; only the main process writes files."""
    history = []
    if resumed_at is not None and table.exists():
        history = [row for row in read_loss_table(table) if row.step <= resumed_at]
    return RunLogs(
        table=table,
        plot=plot,
        title=plot_title(args.output_name or DEFAULT_OUTPUT_NAME),
        tensorboard=tensorboard_folder(args, time.localtime()) if write else None,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        group_names=group_names(optimizer.param_groups, network),
        history=history,
        write=write,
    )
