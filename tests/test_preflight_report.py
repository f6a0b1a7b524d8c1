"""What the pre-flight report says about a messy dataset, a run that cannot start, memory and disk; its askers."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from test_preflight_fixtures import make_messy_dataset, small_config, tiny_model, write_image  # noqa: F401
from wizard.askers.base import line_up_columns
from wizard.askers.console import ConsoleAsker
from wizard.askers.scripted import ScriptedAsker, ScriptExhausted
from wizard.memory_estimate import GpuMemory, parse_nvidia_smi
from wizard.preflight import confirm_preflight, preflight_report

SMALL_GPU = GpuMemory("NVIDIA GeForce GTX 1050", total_gb=2.0, used_gb=0.5)
BIG_GPU = GpuMemory("NVIDIA GeForce RTX 4090", total_gb=24.0, used_gb=0.5)


@pytest.fixture
def messy(tmp_path: Path) -> tuple[Path, Path]:
    images, reg = make_messy_dataset(tmp_path / "data")
    assert reg is not None
    return images, reg


def test_the_text_names_every_problem_of_a_messy_dataset(tiny_model, messy, tmp_path):
    images, reg = messy
    config = small_config(tiny_model, images, tmp_path / "out", train_resolution=96, bucket_reso_steps=32,
                          reg_img_folder=str(reg), gradient_acc_steps=2, warmup_lr_ratio=0.2)
    report = preflight_report(config, read_gpu=lambda: BIG_GPU)
    text = line_up_columns(report.text())

    mychar = next(folder for folder in report.folders if folder.name == "5_mychar")
    assert (mychar.images, mychar.captions_found, mychar.repeats, mychar.samples) == (7, 6, 5, 35)
    assert mychar.images_without_caption == ["g_uncaptioned.png"]
    assert mychar.captions_without_image == ["orphan.txt"]
    assert mychar.unreadable_images == ["z_broken.png"]
    assert "5_mychar: 1 image without a caption file: g_uncaptioned.png" in text
    assert "5_mychar: 1 caption file without an image (not used): orphan.txt" in text
    assert "5_mychar: 1 image that cannot be read (skipped): z_broken.png" in text
    assert "1_person (regularization)" in text

    assert "7 images x 5 repeats = 35 samples per epoch." in text
    assert "35 more, 70 samples per epoch in all" in text  # regularization doubles the epoch
    # 64x128: 5 samples -> 3 batches, 96x96: 55 -> 28, 128x64: 10 -> 5
    assert "that is 36 batches per epoch" in text
    assert "every 2 batches make one step: 18 steps per epoch." in text
    assert "x 2 epochs = 36 steps." in text
    assert "over the first 7 steps" in text  # int(36 * 0.2)

    notes = {bucket.resolution: bucket.note() for bucket in report.buckets}
    assert notes == {(64, 128): "only 1 image at this size", (96, 96): "", (128, 64): "only 2 images at this size"}
    assert "Trigger word 'mychar' (from the folder name 5_mychar): in 6 of 7 captions; missing in f_tall.png." in text
    assert report.top_tags[0] == ("mychar", 6)  # the uncaptioned image's class-token caption is not a tag count
    assert "GPU: NVIDIA GeForce RTX 4090, 24.0 GB, 23.5 GB free." in text and "This fits." in text
    assert "needed: about" in text and "(enough)" in text
    assert "z_broken.png cannot be read" in text  # the scan's warnings are listed


def test_a_run_counted_in_steps_says_how_many_epochs_that_is(tiny_model, messy, tmp_path):
    images, _ = messy
    config = small_config(tiny_model, images, tmp_path / "out", max_steps=50)
    report = preflight_report(config, read_gpu=lambda: None)
    # 64 px: every image goes to 64x64: 35 samples -> 18 batches per epoch
    assert report.length is not None and report.length.steps_per_epoch == 18
    assert "The run is set to 50 steps: 2.8 epochs, counted as 3." in report.text()


def test_a_folder_name_missing_from_every_caption_is_not_called_a_trigger(tiny_model, tmp_path):
    folder = tmp_path / "images" / "3_shapes"
    for index in range(3):
        write_image(folder / f"{index}.png", 64, 64)
        (folder / f"{index}.txt").write_text(f"zkw, shape {index}", encoding="utf-8")
    report = preflight_report(small_config(tiny_model, folder.parent, tmp_path / "out"), read_gpu=lambda: None)
    assert ("The folder name 'shapes' (3_shapes) is in none of the captions, so it is not a trigger word"
            in report.text())
    assert "Most captions start with 'zkw': that is the word to use in prompts." in report.text()


def test_a_run_that_cannot_start_is_one_sentence_with_back_and_cancel_only(tiny_model, tmp_path):
    empty = tmp_path / "images"
    (empty / "10_nothing").mkdir(parents=True)
    config = small_config(tiny_model, empty, tmp_path / "out")
    report = preflight_report(config, read_gpu=lambda: None)
    assert not report.can_start
    assert report.text().startswith("Training cannot start: No training images were found in ")
    assert report.text().count("\n") == 0

    asker = ScriptedAsker()
    assert confirm_preflight(config, asker) == "cancel"
    assert asker.reports[0][2] is False  # Start is not offered
    assert not (tmp_path / "out").exists()  # nothing is written for a run that cannot start
    with pytest.raises(ScriptExhausted):
        confirm_preflight(config, ScriptedAsker(report_actions=["start"]))


def test_a_gpu_too_small_gets_the_spill_warning_and_what_to_change(tiny_model, messy, tmp_path):
    images, _ = messy
    config = small_config(tiny_model, images, tmp_path / "out", batch_size=4, gradient_checkpointing=False)
    report = preflight_report(config, read_gpu=lambda: SMALL_GPU)
    # the demo model is tiny, so make the estimate the one of a real SD1 model on this GPU
    real = replace(report, memory=replace(report.memory, frozen_weights_gb=1.8))
    text = real.text()
    assert "spills into shared system memory and slows to a crawl" in text
    assert "To need less: a smaller batch size; turn on gradient checkpointing;" in text
    assert "the AdamW8bit optimizer" in text


def test_without_a_gpu_the_report_says_the_cpu_is_slow(tiny_model, messy, tmp_path):
    images, _ = messy
    config = small_config(tiny_model, images, tmp_path / "out", mixed_precision="fp16")
    report = preflight_report(config, read_gpu=lambda: None)
    assert "No NVIDIA GPU was found: training runs on the CPU, which is very slow" in report.text()
    assert report.memory is not None and report.memory.runtime_gb < 1  # fp16 falls back to fp32 on the CPU


def test_disk_check_counts_every_save_and_the_latents_cached_to_disk(tiny_model, messy, tmp_path):
    images, _ = messy
    config = small_config(tiny_model, images, tmp_path / "out", num_epochs=6, save_every_n_epochs=2,
                          cache_latents_to_disk=True)
    report = preflight_report(config, read_gpu=lambda: None)
    output, latents = report.disks
    assert "3 LoRA files" in output.what  # after epochs 2 and 4, and the final one
    single = preflight_report(small_config(tiny_model, images, tmp_path / "out"), read_gpu=lambda: None).disks[0]
    assert output.needed_gb == pytest.approx(3 * single.needed_gb)
    assert latents.needed_gb * 1024**3 == 7 * 4 * 8 * 8 * 4  # 7 readable images, 4 fp32 channels at 8x8
    assert latents.free_gb > 0


def test_confirm_writes_the_report_beside_the_outputs_without_overwriting(tiny_model, messy, tmp_path, capsys):
    images, _ = messy
    config = small_config(tiny_model, images, tmp_path / "out")
    asker = ScriptedAsker(report_actions=["back"])
    assert confirm_preflight(config, asker) == "back"
    assert confirm_preflight(config, asker) == "start"
    first, second = tmp_path / "out" / "preflight.txt", tmp_path / "out" / "preflight-2.txt"
    assert first.read_text(encoding="utf-8") == second.read_text(encoding="utf-8")
    assert "7 images x 5 repeats = 35 samples per epoch." in first.read_text(encoding="utf-8")
    assert "\t" not in first.read_text(encoding="utf-8")  # the tables are lined up with spaces
    assert asker.reports[0][0] == "Before training starts"
    assert "Images and captions" in capsys.readouterr().out  # the terminal shows it too


@pytest.mark.parametrize(("typed", "can_start", "expected"), [
    ("s\n", True, "start"), ("b\n", True, "back"), ("c\n", True, "cancel"), ("", True, "cancel"),
    ("x\ns\n", True, "start"), ("s\nb\n", False, "back"),
])
def test_console_report_answers(typed, can_start, expected):
    output = io.StringIO()
    asker = ConsoleAsker(stdin=io.StringIO(typed), stdout=output)
    assert asker.report("Before training starts", "Sizes\nSize\tImages\n64x64\t10", can_start=can_start) == expected
    shown = output.getvalue()
    assert "Size   Images\n64x64      10" in shown
    assert ("s = start training" in shown) is can_start


def test_line_up_columns_right_aligns_numbers_and_keeps_other_lines():
    text = "Title\nName\tCount\nlong name\t5\nx\t120\n\n- a note"
    assert line_up_columns(text) == "Title\nName       Count\nlong name      5\nx            120\n\n- a note"


def test_nvidia_smi_output_is_read_in_gb():
    gpu = parse_nvidia_smi("12288, 1024, NVIDIA GeForce RTX 3060\n8192, 0, Other GPU\n")
    assert gpu == GpuMemory("NVIDIA GeForce RTX 3060", 12.0, 1.0) and gpu.free_gb == 11.0
    assert parse_nvidia_smi("") is None
    assert parse_nvidia_smi("[N/A], [N/A], Some GPU") is None
