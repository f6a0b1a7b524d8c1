"""Every optimizer the wizard offers trains the demo model through its real package, with what the wizard gives it,
and sd-scripts' other names step through theirs; D-Adaptation and Prodigy find a step size; schedule-free saves its
averaged weights; a missing package or a wrong option is refused before the model loads."""

from __future__ import annotations

import importlib
import inspect
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from questions.optimizer import QUESTIONS as OPTIMIZER_QUESTIONS
from questions.optimizer import uses_lr_schedule
from sd_scripts.errors import UserFacingError
from sd_scripts.optimizer_kinds import (
    OFFERED_OPTIMIZERS,
    OPTIMIZER_KINDS,
    OPTIMIZERS,
    parse_optimizer_args,
    resolve_optimizer,
)
from sd_scripts.train import train
from sd_scripts.training import loop
from sd_scripts.training.loop import TrainingSession
from sd_scripts.training.optimizers import build_optimizer
from sd_scripts.training.validation import validate_args
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)
from wizard.config import TrainConfig
from wizard.translate import train_args_values

# sd-scripts' variants the wizard does not offer (same packages and code paths as offered ones), and a plain name
# from torch.optim: one step each on a tensor. A module.Class name trains the demo like the offered ones.
VARIANTS = tuple(name for name in OPTIMIZERS if name not in OFFERED_OPTIMIZERS) + ("Adamax",)
# RAdam's rectification term rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t) (rho_inf = 2 / (1 - beta2) - 1) first
# exceeds 4 at t = 5 with beta2 = 0.999: before that schedulefree's RAdam (silent_sgd_phase) does not move the weights.
STEPS = {"RAdamScheduleFree": 6}
OPTIMIZER_QUESTION = next(question for question in OPTIMIZER_QUESTIONS if question.id == "optimizer")


def wizard_config(name: str) -> TrainConfig:
    config = TrainConfig(cuda=False)
    OPTIMIZER_QUESTION.store(name, config)
    return config


def wizard_settings(name: str) -> dict:
    """The optimizer settings the wizard hands the trainer when the user picks `name`."""
    values = train_args_values(wizard_config(name))
    return {key: values[key] for key in
            ("optimizer_type", "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler")}


def settings_for(optimizer_type: str) -> dict:
    """The wizard's settings for what it offers; for a module.Class, what a sd-scripts config file would say."""
    if optimizer_type in OFFERED_OPTIMIZERS:
        return wizard_settings(optimizer_type)
    return {"optimizer_type": optimizer_type, "optimizer_args": ["weight_decay=0.01"]}


def package_class(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.fixture
def sessions(monkeypatch) -> list[TrainingSession]:
    """Every TrainingSession that runs in the test, to look at its optimizer afterwards."""
    made: list[TrainingSession] = []
    run = TrainingSession.run

    def recording_run(self: TrainingSession):
        made.append(self)
        return run(self)

    monkeypatch.setattr(TrainingSession, "run", recording_run)
    return made


@pytest.fixture
def no_model_loading(monkeypatch) -> None:
    """Loading the base model fails the test: the refusals below must come before it."""
    def load_base_model(*args, **kwargs):
        raise AssertionError("the base model was loaded before the optimizer was checked")

    monkeypatch.setattr(loop, "load_base_model", load_base_model)


# --- every optimizer trains ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer_type", OFFERED_OPTIMIZERS + ("torch.optim.RAdam",))
def test_every_optimizer_trains_the_demo_through_its_package(optimizer_type, demo, one_repeat_images, tmp_path,
                                                             sessions):
    settings = settings_for(optimizer_type)
    eight_bit = optimizer_type.endswith("8bit")
    if eight_bit:  # the demo's LoRA tensors are below bitsandbytes' 4096-element threshold for 8-bit state
        settings["optimizer_args"] = [*settings.get("optimizer_args", []), "min_8bit_size=1"]
    result = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=STEPS.get(optimizer_type, 2),
                             **settings))
    assert result.ok, result.message

    kind = resolve_optimizer(optimizer_type)
    optimizer = sessions[-1].optimizer.optimizer  # the package's own object under accelerate's wrapper
    assert type(optimizer) is package_class(kind.target)
    ups = [tensor for key, tensor in load_file(result.lora_path).items() if "lora_up" in key]
    assert any(tensor.abs().sum() > 0 for tensor in ups)  # the zero-initialised up weights moved: it trained
    with safe_open(result.lora_path, framework="pt") as handle:
        written = handle.metadata()["ss_optimizer"]
    assert written.startswith(f"{type(optimizer).__module__}.{type(optimizer).__name__}")
    if kind.learning_rate_free:  # every group holds its step size d: the logs show d * lr
        assert all(group["d"] > 0 for group in optimizer.param_groups)
    if eight_bit:
        assert any(value.dtype == torch.uint8 for state in optimizer.state.values() for value in state.values()
                   if torch.is_tensor(value))


@pytest.mark.parametrize("optimizer_type", VARIANTS)
def test_every_variant_takes_a_step_through_its_package(optimizer_type):
    kind = resolve_optimizer(optimizer_type)
    torch.manual_seed(0)
    parameter = torch.nn.Parameter(torch.randn(64, 64))
    before = parameter.detach().clone()
    rate = 1.0 if kind.learning_rate_free else 1e-3
    built = build_optimizer(kind, [{"params": [parameter], "lr": rate}], rate, {})
    assert type(built.optimizer) is package_class(kind.target)
    if kind.schedule_free:
        built.optimizer.train()
    for _ in range(STEPS.get(optimizer_type, 2)):
        built.optimizer.zero_grad()
        (parameter - 1).pow(2).sum().backward()
        built.optimizer.step()
    assert not torch.equal(before, parameter.detach())


def test_schedule_free_saves_its_averaged_weights(demo, one_repeat_images, tmp_path, sessions):
    """Schedule-free AdamW trains at y = beta1 x + (1 - beta1) z and saves x, its average (Defazio et al. 2024)."""
    result = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=3,
                             **wizard_settings("AdamWScheduleFree")))
    assert result.ok, result.message
    session = sessions[-1]
    optimizer = session.optimizer.optimizer
    beta1 = optimizer.param_groups[0]["betas"][0]
    saved = load_file(result.lora_path)
    moved = 0
    for name, y in session.network.named_parameters():  # the loop is back in train mode: the weights are y
        x = (y.detach() - (1 - beta1) * optimizer.state[y]["z"]) / beta1
        assert torch.allclose(saved[name], x, atol=1e-6), name
        moved += not torch.allclose(x, y.detach())
    assert moved  # x and y differ, so the file holds the average and not the training point


# --- learning-rate-free optimizers --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DAdaptation", "Prodigy"])
def test_learning_rate_free_optimizers_raise_d_above_its_start(name, demo, one_repeat_images, tmp_path, sessions):
    settings = {**wizard_settings(name), "lr_scheduler": "constant"}
    result = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=5, **settings))
    assert result.ok, result.message
    optimizer = sessions[-1].optimizer.optimizer
    d0 = inspect.signature(type(optimizer)).parameters["d0"].default  # the package's starting d
    assert d0 == pytest.approx(1e-6)
    assert all(group["d"] > d0 for group in optimizer.param_groups)


def test_wizard_gives_learning_rate_free_optimizers_rate_one_and_decouple_and_takes_them_back():
    for name in ("DAdaptation", "DAdaptAdam", "Prodigy"):
        config = wizard_config(name)
        assert [config.get(field) for field in ("learning_rate", "unet_lr", "text_encoder_lr")] == [1.0] * 3
        assert config.get("optimizer_args")["decouple"] == "True"
        assert "decouple=True" in wizard_settings(name)["optimizer_args"]
    for name in ("DAdaptLion", "DAdaptSGD"):  # their classes take no decouple: the wizard does not add one
        assert "decouple" not in wizard_config(name).get("optimizer_args")
    config = wizard_config("Prodigy")
    OPTIMIZER_QUESTION.store("AdamW", config)
    assert "decouple" not in config.get("optimizer_args")
    assert (config.get("learning_rate"), config.get("unet_lr")) == (1e-4, None)


def test_one_learning_rate_optimizers_refuse_different_rates_before_loading(demo, one_repeat_images, tmp_path,
                                                                            no_model_loading):
    # the package itself refuses two groups with different rates at its first step
    first, second = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    built = build_optimizer(resolve_optimizer("Prodigy"), [{"params": [first], "lr": 1.0},
                                                           {"params": [second], "lr": 0.5}], 1.0, {})
    (first.sum() + second.sum()).backward()
    with pytest.raises(RuntimeError, match="different lr"):
        built.optimizer.step()
    result = train(demo_args(demo, one_repeat_images, tmp_path, optimizer_type="Prodigy", learning_rate=1.0,
                             unet_lr=1.0, text_encoder_lr=0.5))
    assert not result.ok and "one learning rate" in result.message


# --- refused before the model loads -------------------------------------------------------------------------------
def test_missing_package_is_refused_before_the_model_loads(demo, one_repeat_images, tmp_path, monkeypatch,
                                                           no_model_loading):
    for package in ("dadaptation", "dadaptation.experimental"):
        monkeypatch.setitem(sys.modules, package, None)  # "import dadaptation" now raises ImportError
    events = EventLog()
    result = train(demo_args(demo, one_repeat_images, tmp_path, optimizer_type="DAdaptation", learning_rate=1.0),
                   events)
    assert not result.ok
    assert "needs the Python package 'dadaptation'" in result.message


@pytest.mark.parametrize(("optimizer_type", "optimizer_args", "words"), [
    ("Prodigy", ["nonsense=1"], "has no option nonsense"),
    ("SGDNesterov", ["betas=0.9,0.99"], "has no option betas"),
    ("AdamW", ["lr=0.1"], "set the learning rate with learning_rate"),
    ("MyFancyOptimizer", [], "not supported"),
    ("no_such_package.Optimizer", [], "cannot be imported"),
])
def test_wrong_optimizer_or_option_is_refused_before_the_model_loads(optimizer_type, optimizer_args, words, demo,
                                                                     one_repeat_images, tmp_path, no_model_loading):
    result = train(demo_args(demo, one_repeat_images, tmp_path, optimizer_type=optimizer_type,
                             optimizer_args=optimizer_args))
    assert not result.ok and words in result.message


# --- names, options and the ss_optimizer text ---------------------------------------------------------------------
def test_names_deprecated_flags_and_sd_scripts_mapping():
    assert resolve_optimizer("").name == "AdamW"
    assert resolve_optimizer("adamw8bit").name == "AdamW8bit"
    assert resolve_optimizer("", use_8bit_adam=True).name == "AdamW8bit"
    assert resolve_optimizer("", use_lion_optimizer=True).target == "lion_pytorch.Lion"  # the original tool's Lion
    # sd-scripts' get_optimizer: "DAdaptation" is dadaptation.experimental.DAdaptAdamPreprint
    assert resolve_optimizer("DAdaptation").target == "dadaptation.experimental.DAdaptAdamPreprint"
    with pytest.raises(UserFacingError):
        resolve_optimizer("", use_8bit_adam=True, use_lion_optimizer=True)


def test_optimizer_args_are_parsed_as_literals():
    assert parse_optimizer_args(["weight_decay=0.1", "betas=0.9,0.99"]) == {"weight_decay": 0.1, "betas": (0.9, 0.99)}
    assert parse_optimizer_args(["weight_decay=0.1 betas=0.9, 0.99 decouple=True"]) == {
        "weight_decay": 0.1, "betas": (0.9, 0.99), "decouple": True}
    with pytest.raises(UserFacingError):
        parse_optimizer_args(["weight_decay"])
    with pytest.raises(UserFacingError):
        parse_optimizer_args(["mode=__import__('os')"])


@pytest.mark.parametrize(("name", "options", "expected"), [
    # sd-scripts: optimizer_class.__module__ + "." + __name__, then "(k=v,...)" of its optimizer_kwargs
    ("AdamW", {"weight_decay": 0.1, "betas": (0.9, 0.99)},
     "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))"),
    ("SGDNesterov", {}, "torch.optim.sgd.SGD(momentum=0.9)"),  # momentum added, nesterov passed apart
    ("AdaFactor", {}, "transformers.optimization.Adafactor(relative_step=True)"),
    ("Lion", {}, "lion_pytorch.lion_pytorch.Lion"),
])
def test_ss_optimizer_text_is_sd_scripts(name, options, expected):
    parameter = torch.nn.Parameter(torch.zeros(4))
    built = build_optimizer(resolve_optimizer(name), [{"params": [parameter], "lr": 1e-3}], 1e-3, options)
    assert built.description == expected


def test_wizard_offers_only_optimizers_that_pass_the_checks_and_skips_the_schedule_where_unused(
        demo, one_repeat_images, tmp_path):
    for name in OFFERED_OPTIMIZERS:
        validate_args(demo_args(demo, one_repeat_images, tmp_path, **wizard_settings(name)))
        config = wizard_config(name)
        own_schedule = OPTIMIZER_KINDS[name].schedule_free or name == "AdaFactor"
        assert uses_lr_schedule(config) is not own_schedule
        assert config.get("scheduler") == ("constant" if own_schedule else "cosine_with_restarts")
    config = wizard_config("AdaFactor")
    config.set("optimizer_args", {"relative_step": "False"})
    assert uses_lr_schedule(config)  # without relative_step Adafactor follows the schedule again
