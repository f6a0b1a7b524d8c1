"""Each learning-rate schedule's curve equals its formula: diffusers' schedules as sd-scripts calls them (warmup as
steps or as a ratio, cosine cycles, polynomial power), Adafactor's relative step, and schedule-free's constant."""

from __future__ import annotations

import math

import pytest
import torch

from sd_scripts.events import Step
from sd_scripts.optimizer_kinds import resolve_optimizer
from sd_scripts.train import train
from sd_scripts.training.length import resolve_warmup_steps
from sd_scripts.training.optimizers import build_optimizer
from sd_scripts.training.schedulers import build_schedule
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)

TOTAL = 20
POLYNOMIAL_END = 1e-7  # diffusers' get_polynomial_decay_schedule_with_warmup lr_end, which sd-scripts keeps


def multiplier(name: str, step: int, *, warmup: int, total: int, cycles: int = 1, power: float = 1.0,
               initial: float = 1.0) -> float:
    """The factor on the learning rate at 0-based optimizer step `step`, written down from diffusers' formulas."""
    if name == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if name == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if name == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    if name == "cosine":  # half a cosine wave from 1 down to 0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if name == "cosine_with_restarts":  # `cycles` half waves, each starting again at 1
        return 0.0 if progress >= 1 else max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
    if name == "polynomial":  # from the initial rate down to lr_end, along (remaining share) ** power
        if step > total:
            return POLYNOMIAL_END / initial
        return ((initial - POLYNOMIAL_END) * (1 - progress) ** power + POLYNOMIAL_END) / initial
    raise AssertionError(name)


def sgd_over_two_groups(learning_rate: float, group_rates: tuple[float, float]):
    parameters = [torch.nn.Parameter(torch.ones(3)) for _ in group_rates]
    groups = [{"params": [parameter], "lr": rate} for parameter, rate in zip(parameters, group_rates)]
    return build_optimizer(resolve_optimizer("SGDNesterov"), groups, learning_rate, {}), parameters


def curve(scheduler, optimizer: torch.optim.Optimizer, steps: int) -> list[list[float]]:
    """The rates of every group at steps 0 .. steps-1 (what each optimizer step uses)."""
    rates = []
    for _ in range(steps):
        rates.append(list(scheduler.get_last_lr()))
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(("name", "cycles", "power"), [
    ("constant", 1, 1.0), ("constant_with_warmup", 1, 1.0), ("linear", 1, 1.0), ("cosine", 1, 1.0),
    ("cosine_with_restarts", 1, 1.0), ("cosine_with_restarts", 3, 1.0), ("polynomial", 1, 1.0),
    ("polynomial", 1, 2.0), ("polynomial", 1, 0.5),
])
@pytest.mark.parametrize("lr_warmup_steps", [0, 4, 0.25])  # none, 4 steps, a quarter of the steps
def test_schedule_curve_equals_its_formula(name, cycles, power, lr_warmup_steps):
    warmup = resolve_warmup_steps(lr_warmup_steps, TOTAL)
    if name == "constant":
        warmup = 0  # it has no warmup (sd-scripts refuses one; we note it)
    learning_rate, group_rates = 2e-4, (2e-4, 5e-5)  # e.g. unet_lr and text_encoder_lr
    built, _ = sgd_over_two_groups(learning_rate, group_rates)
    scheduler, notes = build_schedule(built, name, learning_rate=learning_rate, warmup_steps=warmup,
                                      total_steps=TOTAL, num_cycles=cycles, power=power)
    assert not notes
    rates = curve(scheduler, built.optimizer, TOTAL + 2)
    for step, step_rates in enumerate(rates):
        factor = multiplier(name, step, warmup=warmup, total=TOTAL, cycles=cycles, power=power, initial=learning_rate)
        assert step_rates == pytest.approx([rate * factor for rate in group_rates], rel=1e-6, abs=1e-12), step
    if lr_warmup_steps == 0.25 and name != "constant":
        assert warmup == 5 and rates[5][0] == pytest.approx(group_rates[0])


def test_constant_schedule_notes_an_unused_warmup():
    built, _ = sgd_over_two_groups(1.0, (1.0, 1.0))
    _, notes = build_schedule(built, "constant", learning_rate=1.0, warmup_steps=5, total_steps=TOTAL)
    assert len(notes) == 1 and "constant_with_warmup" in notes[0]


@pytest.mark.parametrize("warmup_init", [False, True])
def test_adafactor_schedule_reports_its_relative_step(warmup_init):
    """Adafactor (Shazeer & Stern 2018): rate = max(1e-3, RMS(weights before the step)) * rho_t, with
    rho_t = min(1e-2, 1/sqrt(t)), or min(1e-6 t, 1/sqrt(t)) with warmup_init."""
    torch.manual_seed(0)
    parameter = torch.nn.Parameter(torch.randn(8, 8) * 0.1)
    built = build_optimizer(resolve_optimizer("AdaFactor"), [{"params": [parameter], "lr": 1e-4}], 1e-4,
                            {"warmup_init": warmup_init})
    assert not built.follows_schedule
    scheduler, notes = build_schedule(built, "cosine", learning_rate=1e-4, warmup_steps=0, total_steps=TOTAL)
    assert scheduler.get_last_lr() == [1e-4]  # before the first step: the learning rate, as initial_lr
    for t in range(1, 8):
        rms = parameter.detach().pow(2).mean().sqrt().item()
        (parameter ** 2).sum().backward()
        built.optimizer.step()
        scheduler.step()
        built.optimizer.zero_grad(set_to_none=False)
        rho = min(1e-6 * t if warmup_init else 1e-2, 1 / math.sqrt(t))
        assert scheduler.get_last_lr()[0] == pytest.approx(max(1e-3, rms) * rho, rel=1e-5)


@pytest.mark.parametrize("name", ["AdamWScheduleFree", "RAdamScheduleFree"])
def test_schedule_free_keeps_the_learning_rate_constant_and_says_the_schedule_is_unused(name):
    parameter = torch.nn.Parameter(torch.ones(3))
    built = build_optimizer(resolve_optimizer(name), [{"params": [parameter], "lr": 1e-3}], 1e-3, {})
    built.optimizer.train()
    scheduler, notes = build_schedule(built, "cosine", learning_rate=1e-3, warmup_steps=2, total_steps=TOTAL)
    assert len(notes) == 1 and "cosine" in notes[0]
    assert [rates[0] for rates in curve(scheduler, built.optimizer, TOTAL)] == [1e-3] * TOTAL
    _, notes = build_schedule(built, "constant", learning_rate=1e-3, warmup_steps=0, total_steps=TOTAL)
    assert not notes


@pytest.mark.parametrize(("changes", "name", "warmup", "cycles", "power"), [
    ({"lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": 2, "lr_warmup_steps": 0.25},
     "cosine_with_restarts", 2, 2, 1.0),
    ({"lr_scheduler": "polynomial", "lr_scheduler_power": 2.0, "lr_warmup_steps": 2, "gradient_accumulation_steps": 2},
     "polynomial", 2, 1, 2.0),
])
def test_training_steps_follow_the_schedule(changes, name, warmup, cycles, power, demo, one_repeat_images, tmp_path):
    """In a real run each optimizer step (not each batch) moves the schedule; Step events show the rate used next."""
    total = 8
    events = EventLog()
    result = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=total, **changes), events)
    assert result.ok, result.message
    reported = [event.lr for event in events.of(Step)]
    expected = [1e-3 * multiplier(name, step, warmup=warmup, total=total, cycles=cycles, power=power, initial=1e-3)
                for step in range(1, total + 1)]
    assert reported == pytest.approx(expected, rel=1e-6, abs=1e-12)
