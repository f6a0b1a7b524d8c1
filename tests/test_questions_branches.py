"""Every branch of the question graph, walked with scripted answers.

Each scenario takes different branches; the last tests check that together they ask every question of every flow
and see each `when` both true and false, so a question that no branch can reach fails the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import questions
from test_graph_fixtures import Project, make_project, write_model_header
from wizard.askers.scripted import ScriptedAsker
from wizard.config import TrainConfig
from wizard.graph import walk
from wizard.question import always

TRAIN = questions.FLOWS["train"]
START = questions.FLOWS["start"]


def train_scenarios(project: Project) -> dict[str, dict]:
    paths = project.path_answers()
    return {
        "defaults": dict(paths),
        "sd2_realistic_lycoris": {
            **paths, "output_name": "mychar", "v2": True, "v_parameterization": True, "realistic": True,
            "use_reg_images": True, "reg_img_folder": str(project.reg_folder), "tag_list": False,
            "height_resolution": 768, "use_keep_tokens": True, "keep_tokens": 2, "cache_or_crop": "random crop",
            "network_type": "LoHa", "conv_dim": 16, "conv_alpha": 8.0, "use_conv_cp": True,
            "optimizer": "DAdaptation", "scheduler": "polynomial", "scheduler_power": 2.0, "length_unit": "steps",
            "max_steps": 500, "use_warmup": True, "warmup_lr_ratio": 0.1, "use_noise_offset": True,
            "noise_offset": 0.05, "use_min_snr_gamma": True, "min_snr_gamma": 4.0, "save_epochs": True,
            "save_every_n_epochs": 2, "training_comment": "mychar, red hat", "sample_images": True,
            "sample_prompts": str(project.prompts), "sample_sampler": "euler_a", "sample_unit": "epochs",
            "sample_every_n_epochs": 1,
        },
        "block_weights_locon": {
            **paths, "block_weights": True, "down_lr_weight": "cosine", "mid_lr_weight": 0.5,
            "up_lr_weight": "0 0 0 0 0.5 0.5 0.5 0.5 1 1 1 1", "net_dim": 16, "use_block_dims": True,
            "block_dims": ",".join(["8"] * 25), "use_block_alphas": True, "block_alphas": ",".join(["4"] * 25),
            "network_type_with_blocks": "LoCon", "use_conv_block_dims": True,
            "conv_block_dims": ",".join(["4"] * 25), "use_conv_block_alphas": True,
            "conv_block_alphas": ",".join(["2"] * 25), "scheduler": "constant", "sample_images": True,
            "sample_prompts": str(project.prompts), "sample_every_n_steps": 50,
        },
        "lokr_with_dropout": {
            **paths, "network_type": "LoKr", "conv_dim": 8, "use_conv_cp": False, "lokr_factor": 4,
            "lokr_full_matrix": True, "dora_wd": True, "lycoris_preset": "attn-mlp", "use_network_dropout": True,
            "rank_dropout": 0.05, "module_dropout": 0.0, "optimizer": "AdamWScheduleFree",  # no scheduler asked
        },
        "dylora": {
            **paths, "network_type": "DyLoRA", "dylora_conv": True, "unit": 8, "net_dim": 32,
            "scheduler": "cosine_with_restarts", "cosine_restarts": 3, "cache_latents_to_disk": True,
            "trained_parts": "unet only", "mixed_precision": "bf16", "gradient_checkpointing": True,
        },
        "compiled_on_a_gpu": {**paths, "torch_compile": True, "dynamo_backend": "cudagraphs"},
        "sdxl_that_does_not_say_v": {  # a header-only SDXL file without v_pred/ztsnr keys or modelspec metadata
            **paths, "base_model": str(write_model_header(project.base_model.with_name("xl.safetensors"), "sdxl")),
            "v_parameterization": True, "zero_terminal_snr": True, "mixed_precision": "fp16",
            "sdxl_vae": "use an fp16-fix VAE file", "sdxl_vae_file": str(project.base_model),
            "block_weights": True, "down_lr_weight": "0 0 0 0.5 0.5 0.5 1 1 1", "up_lr_weight": "cosine",
        },
    }


def start_scenarios(project: Project, settings_file: Path) -> dict[str, dict]:
    return {
        "answer_everything": {},
        "load_with_new_folders": {"load_json": True, "load_json_file": str(settings_file), "new_folders": True},
        "save_only": {"save_json": True, "save_json_folder": str(project.json_folder), "save_json_name": "mine",
                      "save_json_only": True},
    }


GPU_SCENARIOS = {"compiled_on_a_gpu"}  # walked as on a machine with an NVIDIA GPU; the others without


def walk_scenario(flow, answers: dict, cuda: bool = False) -> tuple[TrainConfig, ScriptedAsker]:
    config = TrainConfig(cuda=cuda)
    asker = ScriptedAsker(answers)
    assert walk(flow, config, asker) == "done"
    return config, asker


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


@pytest.fixture
def settings_file(project: Project) -> Path:
    path = project.json_folder.parent / "old.json"
    path.write_text('{"config_version": 1, "net_dim": 8}', encoding="utf-8")
    return path


def test_defaults_branch_keeps_every_tuned_default(project: Project):
    config, asker = walk_scenario(TRAIN, train_scenarios(project)["defaults"])
    assert asker.asked[:4] == ["base_model", "img_folder", "output_folder", "output_name"]
    assert config.get("clip_skip") == 2 and config.get("network_type") == "LoRA"
    assert config.get("net_dim") == 32 and config.get("alpha") == 16
    assert config.get("reg_img_folder") is None and config.get("sample_prompts") is None
    assert "reg_img_folder" not in asker.asked and "sample_prompts" not in asker.asked


def test_sd2_realistic_lycoris_branch(project: Project):
    config, asker = walk_scenario(TRAIN, train_scenarios(project)["sd2_realistic_lycoris"])
    assert config.get("v2") and config.get("v_parameterization") and config.get("clip_skip") == 1
    assert config.get("reg_img_folder") == str(project.reg_folder)
    assert config.get("random_crop") and not config.get("cache_latents") and not config.get("cache_latents_to_disk")
    assert config.get("network_type") == "LoHa" and config.get("conv_dim") == 16 and config.get("use_conv_cp")
    # DAdaptation: decouple is switched on and the learning rates nobody typed become 1.0
    assert config.get("optimizer_args")["decouple"] == "True"
    assert (config.get("learning_rate"), config.get("unet_lr"), config.get("text_encoder_lr")) == (1.0, 1.0, 1.0)
    assert asker.defaults["learning_rate"] == 1.0
    assert config.get("max_steps") == 500 and "num_epochs" not in asker.asked
    # the seed tool's bug: epoch-based sampling went to a misspelled key; here exactly one cadence is set
    assert config.get("sample_every_n_epochs") == 1 and config.get("sample_every_n_steps") is None
    assert config.get("sample_sampler") == "euler_a" and config.get("training_comment") == "mychar, red hat"


def test_block_weight_branch(project: Project):
    config, asker = walk_scenario(TRAIN, train_scenarios(project)["block_weights_locon"])
    assert config.get("down_lr_weight") == "cosine" and config.get("mid_lr_weight") == 0.5
    assert config.get("up_lr_weight") == "0,0,0,0,0.5,0.5,0.5,0.5,1,1,1,1"
    assert config.get("block_dims") == ",".join(["8"] * 25) and config.get("alpha") == 8.0  # alpha follows dim
    assert config.get("network_type") == "LoCon" and "network_type" not in asker.asked
    assert "use_conv_cp" not in asker.asked  # kohya's LoCon with blocks has no CP decomposition
    assert "use_warmup" not in asker.asked  # a constant scheduler has no warmup
    assert config.get("sample_every_n_steps") == 50


def test_dylora_branch(project: Project):
    config, asker = walk_scenario(TRAIN, train_scenarios(project)["dylora"])
    assert config.get("network_type") == "DyLoRA" and config.get("unit") == 8
    assert config.get("conv_dim") == 32  # DyLoRA's conv dim is its dim
    assert "conv_dim" not in asker.asked and "conv_alpha" in asker.asked
    assert config.get("cosine_restarts") == 3 and config.get("unet_only") and not config.get("text_only")


def test_torch_compile_is_offered_with_an_nvidia_gpu_only_and_inductor_only_with_triton(project: Project,
                                                                                         monkeypatch):
    from wizard.translate import to_train_args

    config, asker = walk_scenario(TRAIN, project.path_answers())
    assert "torch_compile" not in asker.asked and not to_train_args(config).torch_compile  # no GPU: not asked
    monkeypatch.setattr(questions.precision.importlib.util, "find_spec", lambda name: None)  # as on Windows
    answers = {**project.path_answers(), "torch_compile": True, "dynamo_backend": ["inductor", "cudagraphs"]}
    config, asker = walk_scenario(TRAIN, answers, cuda=True)
    assert asker.asked.count("dynamo_backend") == 2
    assert asker.defaults["dynamo_backend"] == "cudagraphs"  # the one that works without Triton is suggested
    assert "inductor needs Triton" in dict(asker.errors)["dynamo_backend"]
    args = to_train_args(config)
    assert args.torch_compile and args.dynamo_backend == "cudagraphs"


def test_start_branches(project: Project, settings_file: Path):
    scenarios = start_scenarios(project, settings_file)
    config, asker = walk_scenario(questions.FLOWS["queue"], {"queue_folder": str(project.json_folder)})
    assert config.get("multi_run_folder") == str(project.json_folder) and asker.asked == ["queue_folder"]
    config, asker = walk_scenario(START, scenarios["load_with_new_folders"])
    assert config.get("load_json_path") == str(settings_file)
    assert config.get("json_load_skip_list") == ["base_model", "img_folder", "output_folder", "change_output_name"]
    assert "save_json" not in asker.asked
    config, asker = walk_scenario(START, scenarios["save_only"])
    assert (config.get("save_json_folder"), config.get("save_json_name"), config.get("save_json_only")) == (
        str(project.json_folder), "mine", True)


def test_every_question_is_asked_and_every_when_goes_both_ways(project: Project, settings_file: Path):
    for flow, scenarios in ((TRAIN, train_scenarios(project)), (START, start_scenarios(project, settings_file))):
        asked: set[str] = set()
        when_results: dict[str, set[bool]] = {question.id: set() for question in flow}
        for name, answers in scenarios.items():
            config, asker = walk_scenario(flow, answers, cuda=name in GPU_SCENARIOS)
            asked.update(asker.asked)
            for question in flow:
                when_results[question.id].add(bool(question.when(config)))
        never_asked = [question.id for question in flow if question.id not in asked]
        assert never_asked == [], f"no branch reaches {never_asked}"
        one_sided = [question.id for question in flow
                     if question.when is not always and when_results[question.id] != {True, False}]
        assert one_sided == [], f"these conditions are never both true and false: {one_sided}"


def test_question_ids_are_unique_and_help_is_given():
    for flow in questions.FLOWS.values():
        ids = [question.id for question in flow]
        assert len(ids) == len(set(ids))
        assert all(question.help and question.text for question in flow)
