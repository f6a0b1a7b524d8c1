"""End-to-end runs of the trainer on the tiny demo model: learning, repeatability, stop and resume, third-party
loading, events, failures and the command line. Runs are a few steps of 64 px images on 2 threads."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sd_scripts.events import EpochEnd, Failed, Finished, SampleMade, Saved, Started, Step
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.train import main, train
from sd_scripts.training.sampling import sample_scheduler
from test_train_fixtures import EventLog, LossProbe, demo_args, one_repeat_images  # noqa: F401 (fixtures)

LEARNING_EPOCHS = 3


def lora_tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def lora_metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


# --- one run that learns, shared by several tests ---------------------------------------------------------------
@pytest.fixture(scope="module")
def learning_run(demo, one_repeat_images, tmp_path_factory):
    """3 epochs of 5 steps (10 images, batch 2), a LoRA saved after each epoch, samples at the end."""
    output = tmp_path_factory.mktemp("learning")
    args = demo_args(
        demo, one_repeat_images, output,
        train_batch_size=2, learning_rate=1e-2, max_train_epochs=LEARNING_EPOCHS, save_every_n_epochs=1,
        lr_scheduler="constant_with_warmup", lr_warmup_steps=0.2,
        sample_prompts=str(demo.prompts), sample_every_n_epochs=LEARNING_EPOCHS, sample_sampler="euler_a",
    )
    events = EventLog()
    result = train(args, events)
    assert result.ok, result.message
    return result, events, output


def test_training_lowers_the_loss_on_fixed_examples(learning_run, demo, one_repeat_images):
    result, _, output = learning_run
    probe = LossProbe(demo, one_repeat_images)
    losses = [probe.loss(None)]
    losses += [probe.loss(output / f"demo-{epoch:06d}.safetensors") for epoch in range(1, LEARNING_EPOCHS)]
    losses.append(probe.loss(output / "demo.safetensors"))
    assert losses[-1] < losses[1] < losses[0]
    assert losses[-1] < 0.9 * losses[0], losses


def test_events_tell_a_consistent_story(learning_run):
    result, events, output = learning_run
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    started, finished = events[0], events[-1]
    assert (started.total_steps, started.steps_per_epoch, started.epochs) == (15, 5, LEARNING_EPOCHS)
    assert (started.num_train_images, started.num_reg_images, started.device) == (10, 0, "cpu")
    steps = events.of(Step)
    assert [step.step for step in steps] == list(range(1, 16))
    assert [step.epoch for step in steps] == [1] * 5 + [2] * 5 + [3] * 5
    assert all(step.loss > 0 and step.steps_per_second > 0 for step in steps)
    assert [step.elapsed_s for step in steps] == sorted(step.elapsed_s for step in steps)
    assert steps[-1].eta_s == 0 and steps[0].eta_s > 0
    # Warmup ratio 0.2 of 15 steps = 3 steps: the rate climbs 1/3, 2/3, then stays at the learning rate.
    assert [step.lr for step in steps[:4]] == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2])
    assert [event.epoch for event in events.of(EpochEnd)] == [1, 2, 3]
    saved = events.of(Saved)
    assert [(event.epoch, event.final) for event in saved] == [(1, False), (2, False), (3, True)]
    assert saved[-1].path == finished.lora_path == result.lora_path == str(output / "demo.safetensors")
    samples = events.of(SampleMade)
    assert len(samples) == 2 and all(sample.step == 15 for sample in samples)
    assert (result.steps, result.epochs, finished.stopped_early) == (15, LEARNING_EPOCHS, False)


def test_saved_lora_has_kohya_metadata_and_the_resolved_warmup(learning_run):
    _, _, output = learning_run
    metadata = lora_metadata(output / "demo.safetensors")
    assert metadata["ss_lr_warmup_steps"] == "3"
    assert (metadata["ss_steps"], metadata["ss_epoch"], metadata["ss_max_train_steps"]) == ("15", "3", "15")
    assert metadata["ss_network_module"] == "networks.lora" and metadata["ss_seed"] == "1234"
    assert json.loads(metadata["ss_dataset_dirs"]) == {"1_shapes": {"n_repeats": 1, "img_count": 10}}
    assert lora_metadata(output / "demo-000001.safetensors")["ss_steps"] == "5"


def test_samples_are_images_in_the_sample_folder(learning_run):
    from PIL import Image

    _, events, output = learning_run
    for sample in events.of(SampleMade):
        assert sample.path.startswith(str(output / "sample"))
        with Image.open(sample.path) as image:
            assert image.size == (64, 64)


def test_trained_lora_loads_in_diffusers_and_matches_our_forward(learning_run, demo):
    from diffusers import StableDiffusionPipeline

    from sd_scripts.models import load_base_model

    _, _, output = learning_run
    lora = output / "demo.safetensors"
    theirs = load_base_model(str(demo.model))
    pipeline = StableDiffusionPipeline(
        vae=theirs.vae, text_encoder=theirs.text_encoder, tokenizer=theirs.tokenizer, unet=theirs.unet,
        scheduler=sample_scheduler("euler", False), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    timestep = torch.tensor([500])
    with torch.no_grad():
        base = pipeline.unet(latents, timestep, context).sample
        pipeline.load_lora_weights(str(lora))
        with_diffusers = pipeline.unet(latents, timestep, context).sample

    ours = load_base_model(str(demo.model))
    network = LoRANetwork.from_weights(ours.text_encoder, ours.unet, lora)
    network.apply_to()
    with torch.no_grad():
        with_ours = ours.unet(latents, timestep, context).sample
    effect = (with_ours - base).abs().max().item()
    assert effect > 1e-3
    assert (with_diffusers - with_ours).abs().max().item() < 1e-3 * max(1.0, effect)


# --- repeatability, stop and resume -----------------------------------------------------------------------------
def resumable_args(demo, images, output, **changes):
    """Gradient accumulation and a warmup + cosine schedule, so optimizer and schedule state both matter."""
    return demo_args(demo, images, output, gradient_accumulation_steps=2, max_train_steps=6, lr_scheduler="cosine",
                     lr_warmup_steps=2, learning_rate=5e-3, **changes)


@pytest.fixture(scope="module")
def uninterrupted_run(demo, one_repeat_images, tmp_path_factory):
    output = tmp_path_factory.mktemp("uninterrupted")
    result = train(resumable_args(demo, one_repeat_images, output))
    assert result.ok, result.message
    return output / "demo.safetensors"


def test_same_seed_gives_the_same_lora(uninterrupted_run, demo, one_repeat_images, tmp_path):
    result = train(resumable_args(demo, one_repeat_images, tmp_path))
    assert result.ok, result.message
    first, second = lora_tensors(uninterrupted_run), lora_tensors(result.lora_path)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert any(first[key].abs().sum() > 0 for key in first if "lora_up" in key)


def test_stopping_saves_a_usable_lora_and_resuming_finishes_the_same_run(uninterrupted_run, demo, one_repeat_images,
                                                                        tmp_path):
    stop = threading.Event()
    events = EventLog()

    def stop_after_step_three(event):
        events(event)
        if isinstance(event, Step) and event.step == 3:
            stop.set()

    stopped = train(resumable_args(demo, one_repeat_images, tmp_path), stop_after_step_three, stop)
    assert stopped.ok and stopped.steps == 3
    assert isinstance(events[-1], Finished) and events[-1].stopped_early
    assert stopped.lora_path == str(tmp_path / "demo-step00000003.safetensors")
    state_dir = tmp_path / "demo-step00000003-state"
    assert events.of(Saved)[-1].state_dir == str(state_dir)
    from sd_scripts.models import load_base_model

    model = load_base_model(str(demo.model))
    LoRANetwork.from_weights(model.text_encoder, model.unet, stopped.lora_path)  # loads: a usable LoRA

    resumed_events = EventLog()
    resumed = train(resumable_args(demo, one_repeat_images, tmp_path, resume=str(state_dir)), resumed_events)
    assert resumed.ok, resumed.message
    assert resumed.steps == 6 and [event.step for event in resumed_events.of(Step)] == [4, 5, 6]
    expected, actual = lora_tensors(uninterrupted_run), lora_tensors(resumed.lora_path)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-7)


# --- failures ---------------------------------------------------------------------------------------------------
def expect_failure(args, words: str) -> Failed:
    events = EventLog()
    result = train(args, events)
    assert not result.ok
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.message == result.message
    assert words in failed.message, failed.message
    assert "\n" not in failed.message and "Traceback" not in failed.message
    return failed


def test_empty_image_folder_fails_with_one_sentence(demo, tmp_path):
    (tmp_path / "images" / "5_nothing").mkdir(parents=True)
    expect_failure(demo_args(demo, tmp_path / "images", tmp_path / "out"), "No training images")


def test_a_file_that_is_not_a_stable_diffusion_model_fails_with_one_sentence(demo, one_repeat_images, tmp_path):
    not_sd = tmp_path / "llm.safetensors"
    save_file({"model.layers.0.mlp.weight": torch.zeros(4, 4)}, str(not_sd))
    args = demo_args(demo, one_repeat_images, tmp_path / "out", pretrained_model_name_or_path=str(not_sd))
    expect_failure(args, "not a Stable Diffusion")


def test_missing_output_folder_fails_before_loading_anything(demo, one_repeat_images):
    expect_failure(demo_args(demo, one_repeat_images, None), "output folder")


def test_an_existing_lora_is_never_overwritten(demo, one_repeat_images, tmp_path):
    existing = tmp_path / "demo.safetensors"
    existing.write_bytes(b"the user's own file")
    expect_failure(demo_args(demo, one_repeat_images, tmp_path), "already exists")
    assert existing.read_bytes() == b"the user's own file"


def test_an_unexpected_error_is_reported_as_a_bug_with_a_log_file(demo, one_repeat_images, tmp_path):
    def broken_handler(event):
        if isinstance(event, Started):
            raise RuntimeError("a bug in an event handler")

    result = train(demo_args(demo, one_repeat_images, tmp_path), broken_handler)
    assert not result.ok and "this is a bug" in result.message
    logs = list(tmp_path.glob("training-error-*.log"))
    assert len(logs) == 1 and "a bug in an event handler" in logs[0].read_text()


# --- command line ------------------------------------------------------------------------------------------------
def test_command_line_reads_a_toml_file_and_options_override_it(demo, one_repeat_images, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(
        "[model_arguments]\n"
        f"pretrained_model_name_or_path = '{demo.model}'\n"
        "[dataset_arguments]\n"
        f"train_data_dir = '{one_repeat_images}'\n"
        "caption_extension = '.txt'\n"
        "resolution = '64'\n"
        "[training_arguments]\n"
        f"output_dir = '{tmp_path / 'out'}'\n"
        "output_name = 'cli'\n"
        "max_train_steps = 50\n"
        "learning_rate = 1e-3\n"
        "seed = 7\n"
        "an_option_we_do_not_know = 1\n",
        encoding="utf-8",
    )
    assert main(["--config_file", str(config), "--max_train_steps", "2", "--network_dim", "2",
                 "--network_train_unet_only"]) == 0
    lora = tmp_path / "out" / "cli.safetensors"
    metadata = lora_metadata(lora)
    assert (metadata["ss_steps"], metadata["ss_network_dim"], metadata["ss_seed"]) == ("2", "2", "7")
    assert not any(key.startswith("lora_te_") for key in lora_tensors(lora))
    captured = capsys.readouterr()
    assert "an_option_we_do_not_know" in captured.err
    assert "Finished after 2 steps" in captured.out


def test_command_line_reports_a_bad_file_in_one_line(tmp_path, capsys):
    assert main(["--config_file", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- many options at once ---------------------------------------------------------------------------------------
def test_memory_and_noise_options_train_together(demo, one_repeat_images, tmp_path):
    events = EventLog()
    result = train(demo_args(
        demo, one_repeat_images, tmp_path, max_train_steps=2, mixed_precision="bf16", gradient_checkpointing=True,
        cache_latents=True, optimizer_type="AdamW8bit", optimizer_args=["weight_decay=0.01", "betas=0.9,0.99"],
        min_snr_gamma=5.0, noise_offset=0.05, multires_noise_iterations=3, save_precision="fp16",
    ), events)
    assert result.ok, result.message
    metadata = lora_metadata(result.lora_path)
    assert metadata["ss_optimizer"].startswith("bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.01")
    assert metadata["ss_mixed_precision"] == "bf16"
    assert all(tensor.dtype == torch.float16 for tensor in lora_tensors(result.lora_path).values())


def test_text_and_network_options_train_together(demo, one_repeat_images, tmp_path):
    events = EventLog()
    result = train(demo_args(
        demo, one_repeat_images, tmp_path, max_train_steps=4, mixed_precision="fp16", clip_skip=2,
        max_token_length=150, network_train_unet_only=True, network_args=["conv_dim=2", "conv_alpha=1"],
        save_every_n_steps=2, save_state=True, optimizer_type="Lion", lr_scheduler="cosine_with_restarts",
        lr_scheduler_num_cycles=2,
    ), events)
    assert result.ok, result.message
    assert any("fp16" in note for note in result.notes)  # no GPU here: trained in fp32 instead, and said so
    keys = lora_tensors(result.lora_path).keys()
    assert not any(key.startswith("lora_te_") for key in keys)
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in keys
    saved = events.of(Saved)
    assert [(event.step, event.final) for event in saved] == [(2, False), (4, True)]
    assert all(event.state_dir and (tmp_path / event.state_dir).is_dir() for event in saved)


def test_stopping_right_after_a_step_save_adds_the_state_beside_it(demo, one_repeat_images, tmp_path):
    stop = threading.Event()
    events = EventLog()

    def stop_after_step_two(event):
        events(event)
        if isinstance(event, Step) and event.step == 2:
            stop.set()

    result = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=4, save_every_n_steps=2,
                             save_every_n_epochs=1, save_last_n_epochs=1), stop_after_step_two, stop)
    assert result.ok and result.lora_path == str(tmp_path / "demo-step00000002.safetensors")
    assert [event.path for event in events.of(Saved)] == [result.lora_path]
    assert (tmp_path / "demo-step00000002-state").is_dir()


def test_a_loss_that_becomes_nan_stops_with_advice(demo, one_repeat_images, tmp_path):
    failed = expect_failure(demo_args(demo, one_repeat_images, tmp_path, learning_rate=1e30, max_train_steps=5), "NaN")
    assert "learning rate" in failed.advice
    # the weights from before the NaN step are kept (tests/test_faults.py checks what is kept and that it resumes)
    assert sorted(path.name for path in tmp_path.glob("*.safetensors")) == ["demo-step00000001.safetensors"]
