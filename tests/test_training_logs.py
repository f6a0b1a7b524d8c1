"""The run's logs: TensorBoard event files in sd-scripts' folder and tag names, read back with TensorBoard's own reader;
the loss table and plot beside the LoRA after every run (stopped and resumed ones too); wandb refused before loading.

Expected values come from the Step / EpochEnd / SampleMade events the run reported, from the settings (learning
rates), from the real optimizer's `d` (Prodigy) and from sd-scripts' own naming rules, re-derived here from its source
(train_util.py: `<logging_dir>/<log_prefix><YYYYmmddHHMMSS>`, accelerate's `network_train` subfolder; train_network.py:
the tags; networks/lora.py get_block_index: the block numbers).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.lr_scheduler import LambdaLR

from sd_scripts.args import TrainArgs
from sd_scripts.events import EpochEnd, Failed, Finished, SampleMade, Started, Step
from sd_scripts.networks.factory import create_network, spec_from_args
from sd_scripts.train import train
from sd_scripts.training.logs import RunLogs, group_names
from sd_scripts.training.loss_plot import PLOT_SIZE
from test_lora_fixtures import tiny_text_encoder, tiny_unet
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)
from wizard.runner import demo_config
from wizard.translate import to_train_args

QUICK_PROMPT = "shpz, a red circle --w 64 --h 64 --s 2 --d 1\n"
FLOAT32 = dict(rel=1e-6)  # TensorBoard stores scalars as float32


def read_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def table_rows(path: Path) -> list[tuple[int, int, float, float]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["step", "epoch", "loss", "lr"]
        return [(int(step), int(epoch), float(loss), float(lr)) for step, epoch, loss, lr in reader]


def step_rows(steps: list[Step]) -> list[tuple[int, int, float, float]]:
    return [(event.step, event.epoch, event.loss, event.lr) for event in steps]


def assert_plot(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == PLOT_SIZE


def test_tensorboard_holds_every_step_under_sd_scripts_tags(demo, one_repeat_images, tmp_path):
    output, logging_dir = tmp_path / "out", tmp_path / "logs"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(QUICK_PROMPT, encoding="utf-8")
    args = demo_args(demo, one_repeat_images, output, max_train_steps=3, train_batch_size=2, cache_latents=True,
                     text_encoder_lr=5e-4, unet_lr=1e-3, logging_dir=str(logging_dir), log_prefix="shapes-",
                     sample_prompts=str(prompts), sample_every_n_steps=2)
    events = EventLog()
    started = time.time()
    result = train(args, events)
    ended = time.time()
    assert result.ok, result.message

    # sd-scripts: <logging_dir>/<log_prefix><local time YYYYmmddHHMMSS>, then accelerate's tracker subfolder
    (run,) = logging_dir.iterdir()
    match = re.fullmatch(r"shapes-(\d{14})", run.name)
    assert match, run.name
    assert int(started) - 1 <= time.mktime(time.strptime(match[1], "%Y%m%d%H%M%S")) <= ended
    (tracker,) = run.iterdir()
    assert tracker.name == "network_train"
    logged = read_events(tracker)

    steps = events.of(Step)
    assert [event.step for event in steps] == [1, 2, 3]
    assert scalars(logged, "loss/current") == [(e.step, pytest.approx(e.loss, **FLOAT32)) for e in steps]
    assert scalars(logged, "loss/average") == [(e.step, pytest.approx(e.average_loss, **FLOAT32)) for e in steps]
    # one lr tag per parameter group under sd-scripts' names, text encoder first (the Step events' lr)
    assert scalars(logged, "lr/textencoder") == [(e.step, pytest.approx(e.lr, **FLOAT32)) for e in steps]
    assert scalars(logged, "lr/textencoder") == [(step, pytest.approx(5e-4, **FLOAT32)) for step in (1, 2, 3)]
    assert scalars(logged, "lr/unet") == [(step, pytest.approx(1e-3, **FLOAT32)) for step in (1, 2, 3)]
    assert not [tag for tag in logged.Tags()["scalars"] if tag.startswith("lr/d*lr")]  # AdamW has no d
    (epoch_end,) = events.of(EpochEnd)
    assert scalars(logged, "loss/epoch_average") == [(1, pytest.approx(epoch_end.average_loss, **FLOAT32))]

    (sample,) = events.of(SampleMade)
    (image,) = logged.Images("sample_0")
    assert image.step == sample.step == 2
    with Image.open(sample.path) as made, Image.open(io.BytesIO(image.encoded_image_string)) as shown:
        assert shown.size == made.size and shown.convert("RGB").tobytes() == made.convert("RGB").tobytes()

    assert table_rows(output / "demo-loss.csv") == step_rows(steps)
    assert events.of(Finished)[0].loss_plot == str(output / "demo-loss.png")
    assert_plot(output / "demo-loss.png")


def test_a_stopped_and_resumed_run_without_tensorboard_keeps_one_table(demo, one_repeat_images, tmp_path):
    output = tmp_path / "out"
    stop = threading.Event()
    first = EventLog()

    def stop_after_step_two(event) -> None:
        first(event)
        if isinstance(event, Step) and event.step == 2:
            stop.set()

    args = demo_args(demo, one_repeat_images, output, max_train_steps=4, train_batch_size=2, cache_latents=True)
    stopped = train(args, stop_after_step_two, stop)
    assert stopped.ok and first.of(Finished)[0].stopped_early
    assert table_rows(output / "demo-loss.csv") == step_rows(first.of(Step))
    assert_plot(output / "demo-loss.png")

    second = EventLog()
    state = output / "demo-step00000002-state"
    resumed = train(demo_args(demo, one_repeat_images, output, max_train_steps=4, train_batch_size=2,
                              cache_latents=True, resume=str(state)), second)
    assert resumed.ok, resumed.message
    assert [event.step for event in second.of(Step)] == [3, 4]
    assert table_rows(output / "demo-loss.csv") == step_rows(first.of(Step) + second.of(Step))
    assert_plot(output / "demo-loss.png")
    assert not list(tmp_path.rglob("events.out.tfevents.*"))  # no logging_dir: no TensorBoard files


def test_the_demo_writes_its_loss_table_and_plot_beside_its_lora(demo, tmp_path):
    """The demo's own settings (through the wizard's translation), shortened to two steps without samples."""
    args = dataclasses.replace(to_train_args(demo_config(demo, tmp_path)), max_train_epochs=None, max_train_steps=2,
                               sample_prompts=None)
    events = EventLog()
    result = train(args, events)
    assert result.ok, result.message
    assert table_rows(tmp_path / "demo_lora-loss.csv") == step_rows(events.of(Step))
    assert_plot(tmp_path / "demo_lora-loss.png")


@pytest.mark.parametrize("changes, words", [
    (dict(log_with="wandb"), "wandb"),
    (dict(log_with="all", logging_dir="logs"), "wandb"),
    (dict(log_with="tensorboard"), "logging_dir"),
])
def test_a_logger_that_cannot_work_is_refused_before_the_model_loads(demo, one_repeat_images, tmp_path, changes,
                                                                     words):
    events = EventLog()
    result = train(demo_args(demo, one_repeat_images, tmp_path / "out", **changes), events)
    assert not result.ok and words in result.message
    assert [type(event) for event in events] == [Failed]  # not even Started: nothing was loaded
    assert not (tmp_path / "out").exists()


def test_a_users_loss_table_is_never_overwritten(demo, one_repeat_images, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    theirs = output / "demo-loss.csv"
    theirs.write_text("my own notes\n", encoding="utf-8")
    events = EventLog()
    result = train(demo_args(demo, one_repeat_images, output), events)
    assert not result.ok and str(theirs) in result.message and Started not in map(type, events)
    assert theirs.read_text(encoding="utf-8") == "my own notes\n"


def step_event(step: int, loss: float, lr: float) -> Step:
    return Step(step=step, total_steps=3, epoch=1, epochs=1, loss=loss, average_loss=loss, lr=lr,
                steps_per_second=1.0, elapsed_s=float(step), eta_s=0.0)


def test_d_times_lr_is_logged_where_the_optimizer_adapts_its_step(tmp_path):
    from prodigyopt import Prodigy

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    optimizer = Prodigy(layer.parameters(), lr=1.0)
    schedule = LambdaLR(optimizer, lambda step: 0.5)
    network = SimpleNamespace(text_encoder_loras=[], unet_loras=[layer])
    logs = RunLogs(table=tmp_path / "t-loss.csv", plot=tmp_path / "t-loss.png", title="t", tensorboard=tmp_path / "tb",
                   optimizer=optimizer, lr_scheduler=schedule,
                   group_names=group_names(optimizer.param_groups, network), history=[])
    expected = []
    inputs = torch.randn(8, 4)
    for step in (1, 2, 3):
        loss = layer(inputs).pow(2).mean()
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        group = optimizer.param_groups[0]
        expected.append((step, pytest.approx(group["d"] * group["lr"], **FLOAT32)))
        logs.record_step(step_event(step, loss.item(), schedule.get_last_lr()[0]))
    logs.close()

    logged = read_events(tmp_path / "tb")
    assert scalars(logged, "lr/unet") == [(step, pytest.approx(0.5, **FLOAT32)) for step in (1, 2, 3)]
    assert scalars(logged, "lr/d*lr/unet") == expected
    assert expected[-1][1] != expected[0][1]  # d really changed, so the tag follows the optimizer


def sd_scripts_block_index(lora_name: str) -> int:
    """networks/lora.py get_block_index for SD1/SD2, written down from its source."""
    found = re.search(r"(down|up)_blocks_(\d+)_(resnets|attentions|upsamplers|downsamplers)_(\d+)_", lora_name)
    if found:
        side, i, part, j = found.groups()
        index = 3 * int(i) + (2 if part.endswith("samplers") else int(j))
        return 1 + index if side == "down" else 12 + 1 + index
    return 12 if "mid_block_" in lora_name else -1


def test_block_learning_rate_groups_are_named_as_sd_scripts_names_them():
    args = TrainArgs(network_args=["down_lr_weight=sine+.5", "mid_lr_weight=1", "up_lr_weight=cosine+.5"])
    network = create_network(spec_from_args(args), tiny_text_encoder(), tiny_unet())
    groups = network.prepare_optimizer_params(1e-4, 1e-3, 1e-3)
    lora_of = {id(p): lora for lora in network.text_encoder_loras + network.unet_loras for p in lora.parameters()}
    expected = ["textencoder"]
    for group in groups[1:]:
        (index,) = {sd_scripts_block_index(lora_of[id(p)].lora_name) for p in group["params"]}
        expected.append(f"unet_block{index}")
    assert len(groups) > 2 and group_names(groups, network) == expected
    assert len(set(expected)) == len(expected)
