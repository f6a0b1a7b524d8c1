"""torch.compile of the U-Net for the training steps (sd_scripts/training/compilation.py; sd-scripts' --torch_compile
and --dynamo_backend).

CI has no GPU and no time for inductor's code generation (minutes for the demo model on two cores), so the run here
compiles with aot_eager: the same graph capture (TorchDynamo through the U-Net and the LoRA's hooks) and the same
ahead-of-time autograd inductor builds on, without generating kernels. It must train the LoRA eager training trains.
The backends that need a GPU are refused in one sentence where they cannot run.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

import sd_scripts.training.compilation as compilation
from sd_scripts.errors import UserFacingError
from sd_scripts.train import args_from_command_line, train
from test_train_fixtures import demo_args, one_repeat_images  # noqa: F401 (a fixture)


def test_a_compiled_unet_trains_the_lora_eager_training_trains(demo, one_repeat_images, tmp_path):  # noqa: F811
    settings = demo_args(demo, one_repeat_images, tmp_path, max_train_steps=3, output_name="eager", cache_latents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count for both: it alone changes the last bits
    try:
        eager = train(settings)
        compiled = train(dataclasses.replace(settings, output_name="compiled", torch_compile=True,
                                             dynamo_backend="aot_eager"))
    finally:
        torch.set_num_threads(threads)
    assert eager.ok and compiled.ok, (eager.message, compiled.message)
    assert any("torch.compile (aot_eager)" in note for note in compiled.notes)
    first, second = load_file(eager.lora_path), load_file(compiled.lora_path)
    assert first.keys() == second.keys()
    weights = [key for key in first if not key.endswith(".alpha")]
    moved = sum((first[key] - second[key]).pow(2).sum().item() for key in weights) ** 0.5
    size = sum(first[key].pow(2).sum().item() for key in weights) ** 0.5
    assert any(first[key].abs().sum() > 0 for key in weights if "lora_up" in key)  # it trained
    assert moved < 1e-4 * size, (moved, size)


def test_the_command_line_takes_sd_scripts_compile_options():
    args, unknown = args_from_command_line(["--pretrained_model_name_or_path", "m.safetensors", "--torch_compile",
                                            "--dynamo_backend", "cudagraphs"])
    assert unknown == []
    assert args.torch_compile is True and args.dynamo_backend == "cudagraphs"


def test_backends_that_cannot_run_here_are_refused_in_one_sentence(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with pytest.raises(UserFacingError, match="cudagraphs replays CUDA graphs and needs an NVIDIA GPU"):
        compilation.check_compile_backend("cudagraphs", cpu)
    with pytest.raises(UserFacingError, match="not one of inductor, cudagraphs, aot_eager, eager"):
        compilation.check_compile_backend("tensorrt", cpu)
    monkeypatch.setattr(compilation.importlib.util, "find_spec", lambda name: None)  # no Triton, as on Windows
    with pytest.raises(UserFacingError, match="needs Triton on a GPU.*choose dynamo_backend cudagraphs"):
        compilation.check_compile_backend("inductor", cuda)
    assert compilation.check_compile_backend("cudagraphs", cuda)  # CUDA graphs need no Triton
    assert any("seldom pays" in note for note in compilation.check_compile_backend("inductor", cpu))


def test_a_refused_backend_stops_the_run_before_the_model_is_loaded(demo, one_repeat_images, tmp_path,  # noqa: F811
                                                                    monkeypatch):
    import sd_scripts.training.loop as loop

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loop, "load_base_model", must_not_load)
    result = train(demo_args(demo, one_repeat_images, tmp_path, torch_compile=True, dynamo_backend="cudagraphs"))
    assert not result.ok and "needs an NVIDIA GPU" in result.message
