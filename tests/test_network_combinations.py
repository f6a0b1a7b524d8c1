"""Every network the popups can produce trains: no type or option is asked, saved and then refused.

The test explores the network questions as a decision tree: every answer of every yes/no and choice question in
`questions.network` (number and text questions keep their pre-filled answer, which the questions validate), each
path walked through the real graph with a scripted asker. Each resulting config goes through the translation and
the trainer's pre-flight validation, which must accept it. Then networks are built on the demo model and take one
real optimizer step (finite loss, changed weights): a set of them in which every type meets every value of every
option it takes (the ~300 distinct combinations a step each would take minutes on 2 cores).

An original-tool JSON with `lyco: true` and LoHa's `network_args` trains from `popup_main.py --load-json F
--no-popups`, as the original's users replay their files.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import questions
from questions import network as network_questions
from sd_scripts.models import encode_tokens, load_base_model, tokenize
from sd_scripts.networks.factory import create_network, network_from_file, spec_from_args
from sd_scripts.networks.kinds import NETWORK_TYPES
from sd_scripts.saving import load_lora_file
from sd_scripts.training.noise import make_noise_scheduler
from sd_scripts.training.step import NoiseSettings, unet_loss
from sd_scripts.training.validation import validate_args
from test_graph_fixtures import Project, make_project
from test_train_fixtures import one_repeat_images  # noqa: F401 (fixture)
from wizard.app import EXIT_OK, main
from wizard.askers.scripted import ScriptedAsker
from wizard.config import TrainConfig
from wizard.formats import seed_json
from wizard.graph import walk
from wizard.question import Question
from wizard.translate import to_train_args

REPOSITORY = Path(__file__).resolve().parent.parent
TRAIN = questions.FLOWS["train"]
NETWORK_QUESTION_IDS = {question.id for question in network_questions.QUESTIONS}
SMALL = {"net_dim": 4, "alpha": 2.0, "conv_dim": 4}  # number answers that keep each training step short


class BranchingAsker(ScriptedAsker):
    """Answers the network's yes/no and choice questions from `path` (indices into their options), and records
    how many options each had, so that the caller can enumerate every path of the tree."""

    def __init__(self, answers: dict[str, Any], path: list[int]) -> None:
        super().__init__(answers)
        self.path = path
        self.branching: list[int] = []

    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        if question.id in NETWORK_QUESTION_IDS and question.kind in ("yesno", "choice"):
            options = (True, False) if question.kind == "yesno" else tuple(question.choices)
            depth = len(self.branching)
            self.branching.append(len(options))
            self.asked.append(question.id)
            return options[self.path[depth] if depth < len(self.path) else 0]
        return super().ask(question, default, can_go_back=can_go_back, error=error)


def every_network_config(project: Project) -> list[TrainConfig]:
    """One config per path through the network questions (depth-first, each option of each question)."""
    configs: list[TrainConfig] = []
    pending: list[list[int]] = [[]]
    while pending:
        path = pending.pop()
        config = TrainConfig(cuda=False)
        asker = BranchingAsker({**project.path_answers(), **SMALL}, path)
        assert walk(TRAIN, config, asker) == "done"
        configs.append(config)
        # Every later option of every question past the fixed prefix opens a path of its own.
        for depth in range(len(path), len(asker.branching)):
            prefix = path + [0] * (depth - len(path))
            pending.extend(prefix + [option] for option in range(1, asker.branching[depth]))
    return configs


@pytest.fixture(scope="module")
def network_configs(tmp_path_factory) -> list[TrainConfig]:
    return every_network_config(make_project(tmp_path_factory.mktemp("project")))


def test_the_questions_reach_every_network_type_and_option(network_configs):
    types = {config.get("network_type") for config in network_configs}
    assert types == set(NETWORK_TYPES)
    args = [to_train_args(config) for config in network_configs]
    used = {item.partition("=")[0] for arguments in args for item in arguments.network_args}
    taken = {option for kind in NETWORK_TYPES.values() for option in kind.options}
    # Options the popups do not ask (sd-scripts' block_lr_zero_threshold, LyCORIS' decompose_both) are still
    # accepted from imported files; every other option of the table is reachable from the questions.
    assert taken - used == {"block_lr_zero_threshold", "decompose_both"}


def test_every_combination_the_questions_produce_passes_validation(network_configs):
    for config in network_configs:
        validate_args(to_train_args(config))  # raises a UserFacingError for anything the trainer would refuse


@pytest.fixture(scope="module")
def demo_model(demo):
    return load_base_model(str(demo.model))


def one_training_step(model, args) -> tuple[float, bool, bool]:
    """Build the network of `args` on the model, take one AdamW step on a fixed batch; (loss, weights changed,
    whether a parameter the network did not declare random (`trains_random_subsets`) got no gradient)."""
    torch.manual_seed(0)
    network = create_network(spec_from_args(args), model.text_encoder, model.unet)
    network.apply_to()
    try:
        network.train()
        groups = network.prepare_optimizer_params(args.text_encoder_lr, args.unet_lr, args.learning_rate)
        optimizer = torch.optim.AdamW(groups)
        before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
        ids = tokenize(model.tokenizer, ["a red circle on a blue square"], None, False)
        context = encode_tokens(model.text_encoder, ids, clip_skip=None, max_token_length=None, v2=False)
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        loss = unet_loss(model.unet, make_noise_scheduler(False), latents, context, torch.ones(1),
                         torch.Generator().manual_seed(2), NoiseSettings(v_parameterization=False),
                         contextlib.nullcontext)
        loss.backward()
        # Several processes take a missing gradient as missing everywhere unless the network says it trains random
        # subsets (data_parallel.py): no network may leave one out without saying so.
        undeclared_gap = not network.trains_random_subsets and any(
            parameter.grad is None for group in groups for parameter in group["params"])
        optimizer.step()
        after = network.state_dict()
        changed = any(not torch.equal(before[name], after[name]) for name in before)
        return loss.item(), changed, undeclared_gap
    finally:
        network.restore()


def covering_networks(configs: list[TrainConfig]) -> list[Any]:
    """Trainer settings from `configs` such that every network type meets every value of every option it takes
    at least once (greedy set cover). Training all ~300 distinct combinations a step each would take minutes on
    2 cores; every one of them is validated above, and here each (type, option, value) trains."""
    candidates = []
    for config in configs:
        args = to_train_args(config)
        kind = spec_from_args(args).kind.name
        features = {(kind, item) for item in args.network_args} | {(kind, "no " + option) for option in
                                                                   NETWORK_TYPES[kind].options}
        features -= {(kind, "no " + item.partition("=")[0]) for item in args.network_args}
        candidates.append((features, args))
    uncovered = set().union(*(features for features, _ in candidates))
    chosen = []
    while uncovered:
        features, args = max(candidates, key=lambda candidate: len(candidate[0] & uncovered))
        chosen.append(args)
        uncovered -= features
    return chosen


def test_every_network_type_and_option_value_the_questions_produce_trains(network_configs, demo_model):
    failures = []
    chosen = covering_networks(network_configs)
    for args in chosen:
        loss, changed, undeclared_gap = one_training_step(demo_model, args)
        if not (torch.isfinite(torch.tensor(loss)) and changed) or undeclared_gap:
            failures.append((args.network_module, args.network_args, loss, changed, undeclared_gap))
    assert failures == []
    assert {spec_from_args(args).kind.name for args in chosen} == set(NETWORK_TYPES)


def test_an_original_tool_lycoris_json_trains_from_the_command_line(tmp_path: Path, demo):
    output = tmp_path / "out"
    settings = {  # the original tool's own keys: lyco + network_args as a dict, no config_version
        "base_model": str(demo.model), "img_folder": str(demo.images), "output_folder": str(output),
        "change_output_name": "loha", "train_resolution": 64, "buckets": False, "batch_size": 1, "max_steps": 2,
        "net_dim": 4, "alpha": 2, "optimizer_type": "AdamW", "learning_rate": 1e-3, "mixed_precision": "no",
        "xformers": False, "test_seed": 5, "tag_occurrence_txt_file": False, "sample_prompts": None,
        "lyco": True, "network_args": {"algo": "loha", "conv_dim": 4, "conv_alpha": 2, "disable_conv_cp": True},
    }
    path = tmp_path / "config-1683000000-loha.json"
    path.write_text(json.dumps(settings, indent=4), encoding="utf-8")
    environment = {**os.environ, "OMP_NUM_THREADS": "2"}
    finished = subprocess.run([sys.executable, str(REPOSITORY / "popup_main.py"), "--load-json", str(path),
                               "--no-popups"], cwd=REPOSITORY, env=environment, capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    state_dict, metadata = load_lora_file(output / "loha.safetensors")
    assert metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(metadata["ss_network_args"])["algo"] == "loha"
    assert any(key.endswith(".hada_w1_a") for key in state_dict)
    assert all(key.startswith(("lora_unet_", "lora_te_text_model_")) for key in state_dict)


JSON_RUNS = {  # one wizard settings file per network type and option the issue names; all train the demo model
    "lycoris_locon": {"network_type": "LyCORIS LoCon", "conv_dim": 4, "conv_alpha": 2.0},
    "loha": {"network_type": "LoHa", "conv_dim": 4, "conv_alpha": 2.0, "use_conv_cp": True},
    "lokr": {"network_type": "LoKr", "conv_dim": 4, "conv_alpha": 2.0, "lokr_factor": 4},
    "ia3": {"network_type": "IA3", "lycoris_preset": "ia3", "learning_rate": 5e-3},
    "dylora": {"network_type": "DyLoRA", "unit": 2, "conv_dim": None},
    "dora": {"network_type": "LyCORIS LoCon", "conv_dim": 4, "conv_alpha": 2.0, "dora_wd": True,
             "lycoris_preset": "attn-mlp"},
    "lora_blocks": {"network_type": "LoRA", "down_lr_weight": "0,0,0,0,1,1,1,1,1,1,1,1", "mid_lr_weight": 1.0,
                    "up_lr_weight": "cosine", "block_dims": ",".join(["4"] * 12 + ["2"] + ["8"] * 12),
                    "block_alphas": ",".join(["2"] * 25)},
}


@pytest.mark.parametrize("name", JSON_RUNS)
def test_each_network_type_trains_from_a_settings_file(name: str, tmp_path: Path, demo, one_repeat_images):
    config = TrainConfig(cuda=False)
    values = {
        "base_model": str(demo.model), "img_folder": str(one_repeat_images),
        "output_folder": str(tmp_path / "out"), "change_output_name": name, "train_resolution": 64,
        "buckets": False, "max_steps": 2, "net_dim": 4, "alpha": 2.0, "optimizer_type": "AdamW",
        "learning_rate": 1e-3, "mixed_precision": "no", "xformers": False, "sample_prompts": None,
        "tag_occurrence_txt_file": False, "test_seed": 3, **JSON_RUNS[name],
    }
    for field, value in values.items():
        config.set(field, value)
    settings = seed_json.save(config, tmp_path, name=name)
    assert main(["--load-json", str(settings), "--no-popups"], questions.FLOWS) == EXIT_OK
    path = tmp_path / "out" / f"{name}.safetensors"
    state_dict, metadata = load_lora_file(path)
    args = to_train_args(config)
    assert metadata["ss_network_module"] == args.network_module
    assert json.loads(metadata["ss_network_args"]) == dict(item.split("=", 1) for item in args.network_args)
    model = load_base_model(values["base_model"])
    loaded = network_from_file(path, model.text_encoder, model.unet)
    again = loaded.state_dict()
    assert set(again) == set(state_dict)
    assert all(torch.equal(again[key].to(state_dict[key].dtype), state_dict[key]) for key in state_dict)
