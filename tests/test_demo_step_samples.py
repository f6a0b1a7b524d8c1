"""Samples every n steps are the ones sd-scripts' train_network.py writes: it calls sample_images after every step
with the step count (so on the last step too, before it leaves the loop), again at each epoch's end with the epoch
(which writes nothing when only sample_every_n_steps is set), and once before training with epoch 0; the file's
label is `e<epoch:06d>` when an epoch was given, else `<steps:06d>` (library/train_util.py, sample_image_inference).
"""

from __future__ import annotations

import re

from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (a fixture)

from sd_scripts.events import SampleMade
from sd_scripts.train import train

ONE_QUICK_PROMPT = "shpz, a red circle --w 64 --h 64 --s 2 --d 1\n"


def test_step_samples_are_those_sd_scripts_writes_the_last_step_included(demo, one_repeat_images, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(ONE_QUICK_PROMPT, encoding="utf-8")
    # 10 images in batches of 5: 2 steps an epoch, 4 steps in 2 epochs; the last step also ends the last epoch
    args = demo_args(demo, one_repeat_images, tmp_path / "out", max_train_steps=4, train_batch_size=5,
                     sample_prompts=str(prompts), sample_every_n_steps=2, sample_at_first=True, sample_sampler="ddim")
    events = EventLog()
    result = train(args, events)
    assert result.ok and result.steps == 4, result.message

    # sd-scripts: before training (epoch 0), after steps 2 and 4; nothing at either epoch's end
    expected = ["e000000", "000002", "000004"]
    assert [event.step for event in events.of(SampleMade)] == [0, 2, 4]
    names = [path.name for path in (tmp_path / "out" / "sample").iterdir()]
    labels = [re.fullmatch(r"demo_\d{14}_(e?\d{6})_00_1\.png", name)[1] for name in names]
    assert sorted(labels) == sorted(expected), names
