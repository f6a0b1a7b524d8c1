"""Settings files everywhere a user has them, and defaults that follow the answers.

`--load-json` reads the wizard's JSON, a Kohya_ss GUI JSON and an sd-scripts TOML by their content; `--from-lora`
reads a LoRA's ss_* metadata; Save writes JSON or an sd-scripts TOML; the queue takes the same files. Bucket sizes
the user never set follow the resolution. The trainings use the demo model at 64 px and take a few seconds each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomli_w

import questions
from questions.start import settings_file_problem
from sd_scripts.args import TrainArgs
from sd_scripts.saving import load_lora_file
from sd_scripts.training.validation import validate_args
from test_app_cli import FakeTrainer, start_at_once
from test_graph_fixtures import make_project
from test_train_fixtures import one_repeat_images  # noqa: F401  (a fixture)
from wizard.app import EXIT_OK, EXIT_USAGE, main
from wizard.askers.scripted import ScriptedAsker
from wizard.config import TrainConfig
from wizard.formats import kohya_gui, lora_metadata, sd_toml, settings_file
from wizard.preflight import preflight_report
from wizard.queue import run_queue
from wizard.runner import train_config
from wizard.summary import summary_rows
from wizard.translate import to_train_args

# Keys that differ between any two runs by their nature: when and which session, not how it trained.
PER_RUN_KEYS = {"ss_session_id", "ss_training_started_at", "ss_training_finished_at"}


def metadata_of(folder: Path, name: str) -> dict[str, str]:
    return load_lora_file(folder / f"{name}.safetensors")[1]


def summary_value(asker: ScriptedAsker, field: str) -> str:
    return next(row.value for row in asker.summaries[-1] if row.field == field)


# --- bucket sizes that follow the resolution ----------------------------------------------------------------------

# The tuned 320..960 at 512 px, scaled by (side / 512), the minimum rounded down and the maximum up to the 64 px step;
# never less than one step nor above the resolution (sd-scripts stops there), never below the resolution for the max.
@pytest.mark.parametrize("width, height, expected", [
    (512, None, (320, 960)),  # the declared defaults themselves
    (768, None, (448, 1472)),  # 480 -> 448, 1440 -> 1472
    (256, None, (128, 512)),  # 160 -> 128, 480 -> 512
    (64, None, (64, 128)),  # 40 -> 0, at least one step: 64; 120 -> 128
    (1024, None, (640, 1920)),  # 640, 1920 (sd-scripts' 1024 maximum would leave only the square bucket)
    (768, 512, (384, 1216)),  # side sqrt(768*512) = 627.1: 391.9 -> 384, 1175.8 -> 1216
])
def test_bucket_sizes_nobody_set_follow_the_resolution(width, height, expected):
    config = TrainConfig(cuda=False)
    config.set("train_resolution", width)
    config.set("height_resolution", height)
    sizes = (config.get("min_bucket_resolution"), config.get("max_bucket_resolution"))
    assert sizes == expected
    args = to_train_args(config)
    assert (args.min_bucket_reso, args.max_bucket_reso) == expected  # the trainer gets the same rule
    rows = {row.field: row.value for row in summary_rows(config)}
    if expected == (320, 960):
        assert rows["min_bucket_resolution"] == "320" and config.adjusted_default("min_bucket_resolution") is None
    else:
        assert rows["min_bucket_resolution"].startswith(f"{expected[0]} (default 320 adjusted: the resolution is")
        assert rows["max_bucket_resolution"].startswith(f"{expected[1]} (default 960 adjusted:")


def test_a_bucket_size_the_user_chose_is_kept_as_chosen():
    config = TrainConfig(cuda=False)
    config.set("min_bucket_resolution", 320)
    config.set("train_resolution", 768)
    assert config.get("min_bucket_resolution") == 320 and config.adjusted_default("min_bucket_resolution") is None
    assert config.get("max_bucket_resolution") == 1472  # the other one still follows
    config.reset("min_bucket_resolution")
    assert config.get("min_bucket_resolution") == 448


def test_a_toml_without_bucket_sizes_keeps_sd_scripts_defaults_where_they_fit(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('resolution = "512"\nenable_bucket = true\n', encoding="utf-8")
    config, _ = sd_toml.load(path, cuda=False)
    assert (config.get("min_bucket_resolution"), config.get("max_bucket_resolution")) == (256, 1024)
    path.write_text('resolution = "128"\nenable_bucket = true\nmax_bucket_reso = 2048\n', encoding="utf-8")
    config, _ = sd_toml.load(path, cuda=False)  # sd-scripts' 256 would stop at 128 px: the minimum follows instead
    assert config.get("min_bucket_resolution") == 64 and config.origin("min_bucket_resolution") == "default"
    assert config.get("max_bucket_resolution") == 2048 and config.origin("max_bucket_resolution") == "loaded"


def test_resolution_256_with_default_buckets_trains(demo, one_repeat_images, tmp_path, one_thread):  # noqa: F811
    config = TrainConfig(cuda=False)
    for name, value in {"base_model": str(demo.model), "img_folder": str(one_repeat_images),
                        "output_folder": str(tmp_path), "change_output_name": "small", "train_resolution": 256,
                        "max_steps": 2, "net_dim": 4, "alpha": 4.0, "optimizer_type": "AdamW",
                        "mixed_precision": "no", "xformers": False, "num_workers": 0}.items():
        config.set(name, value)
    report = preflight_report(config, read_gpu=lambda: None, check_torch=lambda: None)
    assert report.problem is None  # before: "The smallest bucket size 320 is larger than the resolution 256x256"
    assert train_config(config).ok
    metadata = metadata_of(tmp_path, "small")
    assert (metadata["ss_min_bucket_reso"], metadata["ss_max_bucket_reso"]) == ("128", "512")
    assert metadata["ss_resolution"] == "(256, 256)" and metadata["ss_steps"] == "2"


# --- reading each kind of file ------------------------------------------------------------------------------------

def gui_settings(model: Path, images: Path, output: Path, **changes) -> dict:
    """A Kohya_ss GUI LoRA file as the GUI writes it: numbers as text, "" for unset, no bucket sizes."""
    data = {
        "pretrained_model_name_or_path": str(model), "v2": False, "v_parameterization": False,
        "logging_dir": "", "train_data_dir": str(images), "reg_data_dir": "", "output_dir": str(output),
        "max_resolution": "64,64", "learning_rate": "0.001", "lr_scheduler": "constant", "lr_warmup": "0",
        "train_batch_size": 2, "epoch": 1, "max_train_steps": "3", "save_every_n_epochs": "", "mixed_precision": "no",
        "save_precision": "float", "seed": "1", "num_cpu_threads_per_process": 2, "cache_latents": True,
        "caption_extension": ".txt", "enable_bucket": True, "gradient_checkpointing": False, "xformers": "sdpa",
        "save_model_as": "safetensors", "shuffle_caption": False, "text_encoder_lr": "", "unet_lr": "",
        "network_dim": 4, "network_alpha": 4, "LoRA_type": "Standard", "optimizer": "AdamW", "optimizer_args": "",
        "clip_skip": 0, "max_data_loader_n_workers": "0", "output_name": "fromgui", "sample_prompts": "",
    }
    data.update(changes)
    return data


def test_load_json_with_a_kohya_gui_file_without_bucket_sizes_trains_the_demo(demo, one_repeat_images,  # noqa: F811
                                                                               tmp_path, one_thread):
    output = tmp_path / "out"
    output.mkdir()
    path = tmp_path / "kohya_gui.json"
    path.write_text(json.dumps(gui_settings(demo.model, one_repeat_images, output)), encoding="utf-8")
    asker = ScriptedAsker()
    assert main(["--load-json", str(path)], questions.FLOWS, asker=asker) == EXIT_OK
    assert "Kohya_ss GUI settings file" in asker.messages[0][2]
    assert summary_value(asker, "min_bucket_resolution").startswith("64 (default 320 adjusted")
    metadata = metadata_of(output, "fromgui")
    assert (metadata["ss_min_bucket_reso"], metadata["ss_max_bucket_reso"]) == ("64", "128")
    assert metadata["ss_enable_bucket"] == "True" and metadata["ss_max_train_steps"] == "3"
    assert metadata["ss_clip_skip"] == "1"  # the GUI's clip skip 0 is "not set": the last layer


def test_load_json_with_an_sd_scripts_toml_trains_the_demo(demo, one_repeat_images, tmp_path, one_thread):  # noqa: F811
    output = tmp_path / "out"
    output.mkdir()
    sections = {
        "model_arguments": {"pretrained_model_name_or_path": str(demo.model)},
        "dataset_arguments": {"train_data_dir": str(one_repeat_images), "caption_extension": ".txt",
                              "resolution": "64", "enable_bucket": True, "min_bucket_reso": 64,
                              "train_batch_size": 2, "max_data_loader_n_workers": 0, "cache_latents": True},
        "network_arguments": {"network_module": "networks.lora", "network_dim": 4, "network_alpha": 2.0},
        "optimizer_arguments": {"optimizer_type": "AdamW", "learning_rate": 1e-3, "lr_scheduler": "constant"},
        "training_arguments": {"output_dir": str(output), "output_name": "fromtoml", "max_train_steps": 3,
                               "mixed_precision": "no", "seed": 5, "min_snr_gamma": 0},  # 0 = off in sd-scripts
    }
    path = tmp_path / "mine.config"  # read by its content, whatever its name
    path.write_text(tomli_w.dumps(sections), encoding="utf-8")
    asker = ScriptedAsker()
    assert main(["--load-json", str(path)], questions.FLOWS, asker=asker) == EXIT_OK
    assert "is an sd-scripts TOML" in asker.messages[0][2]
    assert "net_dim" not in asker.asked and "base_model" not in asker.asked
    metadata = metadata_of(output, "fromtoml")
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"], metadata["ss_seed"]) == ("4", "2.0", "5")
    assert (metadata["ss_min_bucket_reso"], metadata["ss_max_bucket_reso"]) == ("64", "1024")  # 1024: sd-scripts'
    assert metadata["ss_max_train_steps"] == "3" and metadata["ss_resolution"] == "(64, 64)"


def test_files_are_told_apart_by_their_content(tmp_path):
    toml_named_json = tmp_path / "a.json"
    toml_named_json.write_text('network_dim = 8\n', encoding="utf-8")
    json_named_toml = tmp_path / "b.toml"
    json_named_toml.write_text('{"config_version": 1, "net_dim": 6}', encoding="utf-8")
    assert settings_file.detect(toml_named_json) == "toml" and settings_file.detect(json_named_toml) == "json"
    assert settings_file.load(toml_named_json, TrainConfig(cuda=False))[0].get("net_dim") == 8
    assert settings_file.load(json_named_toml, TrainConfig(cuda=False))[0].get("net_dim") == 6
    notes = tmp_path / "notes.txt"
    notes.write_text("my training notes: = went well\n", encoding="utf-8")
    with pytest.raises(Exception, match="neither a settings JSON"):
        settings_file.detect(notes)


def test_choose_new_folders_keeps_them_out_of_a_toml_too(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('train_data_dir = "/elsewhere/img"\nnetwork_dim = 8\n', encoding="utf-8")
    base = TrainConfig(cuda=False)
    base.set("json_load_skip_list", ["img_folder"])
    base.set("img_folder", "/mine/img")
    config, _ = settings_file.load(path, base)
    assert config.get("img_folder") == "/mine/img" and config.get("net_dim") == 8


def test_the_queue_runs_toml_files_as_well(tmp_path):
    (tmp_path / "1.toml").write_text('network_dim = 8\n', encoding="utf-8")
    (tmp_path / "2.json").write_text('{"config_version": 1, "net_dim": 6}', encoding="utf-8")
    dims = []

    def run_one(config, *, position):
        dims.append(config.get("net_dim"))
        return FakeTrainer()(config, None)

    summary = run_queue(tmp_path, run_one, report=lambda line: None)
    assert dims == [8, 6] and len(summary.succeeded) == 2


# --- saving -------------------------------------------------------------------------------------------------------

def test_save_as_toml_round_trips(tmp_path):
    project = make_project(tmp_path)
    answers = {**project.path_answers(), "save_json": True, "save_json_folder": str(project.json_folder),
               "settings_format": "toml", "save_json_name": "mine", "save_json_only": True, "net_dim": 8,
               "train_resolution": 768}
    assert main([], questions.FLOWS, train=FakeTrainer(), asker=ScriptedAsker(answers),
                preflight=start_at_once) == EXIT_OK
    (saved,) = project.json_folder.glob("config-*-mine.toml")
    args, unknown = TrainArgs.from_toml(saved)  # what `python -m sd_scripts.train --config_file` reads
    assert unknown == [] and args.network_dim == 8 and args.train_data_dir == str(project.img_folder)
    assert (args.min_bucket_reso, args.max_bucket_reso) == (448, 1472)  # the adapted defaults are written
    trainer = FakeTrainer()
    assert main(["--load-json", str(saved), "--no-popups"], questions.FLOWS, train=trainer) == EXIT_OK
    assert to_train_args(trainer.configs[0]) == args


def test_save_in_the_summary_asks_where_and_in_which_format(tmp_path):
    project = make_project(tmp_path)
    asker = ScriptedAsker({**project.path_answers(), "save_json_folder": str(project.json_folder),
                           "settings_format": "toml"}, summary_actions=["save", "cancel"])
    main([], questions.FLOWS, train=FakeTrainer(), asker=asker, preflight=start_at_once)
    (saved,) = project.json_folder.glob("config-*.toml")
    assert asker.messages[-1][1:] == ("Settings saved", f"Your settings were saved to {saved}.")
    assert TrainArgs.from_toml(saved)[0].train_data_dir == str(project.img_folder)


# --- values sd-scripts accepts ------------------------------------------------------------------------------------

def test_kohya_gui_values_sd_scripts_accepts_are_accepted(tmp_path):
    # LyCORIS' full-matrix LoKr: the GUI writes network_dim 100000 (sd-scripts issue #1402); our old maximum was 1024.
    # SD at 1024 px without bucket sizes: sd-scripts uses its maximum 1024; our old fixed maximum 960 stopped there.
    path = tmp_path / "lokr.json"
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"stub")
    data = gui_settings(model, tmp_path, tmp_path, LoRA_type="LyCORIS/LoKr", network_dim=100000, conv_dim=100000,
                        conv_alpha=1, max_resolution="1024,1024", min_snr_gamma=0)
    path.write_text(json.dumps(data), encoding="utf-8")
    config, _ = kohya_gui.load(path, TrainConfig(cuda=False))
    assert (config.get("network_type"), config.get("net_dim"), config.get("conv_dim")) == ("LoKr", 100000, 100000)
    args = to_train_args(config)
    validate_args(args)
    assert args.min_bucket_reso <= 1024 <= args.max_bucket_reso


def test_an_imported_value_the_popups_would_change_is_kept_with_their_suggestion(tmp_path):
    path = tmp_path / "prodigy.json"
    data = gui_settings(tmp_path / "model.safetensors", tmp_path, tmp_path, optimizer="Prodigy",
                        learning_rate="0.0001")
    path.write_text(json.dumps(data), encoding="utf-8")
    config, _ = kohya_gui.load(path, TrainConfig(cuda=False))
    rows = {row.field: row.value for row in summary_rows(config)}
    assert config.get("learning_rate") == 1e-4
    assert rows["learning_rate"] == ("0.0001 (kept from the file; Prodigy finds its own step size; the popups suggest "
                                     "learning rate 1.0.)")


# --- train again like this LoRA -----------------------------------------------------------------------------------

def test_a_lora_s_metadata_trains_again_with_the_same_settings(demo, one_repeat_images, tmp_path,  # noqa: F811
                                                               one_thread):
    project = tmp_path / "project"
    shutil.copytree(one_repeat_images, project / "img")  # project/img/1_shapes, found beside project/first/
    first, again = project / "first", project / "again"
    first.mkdir()
    again.mkdir()
    config = TrainConfig(cuda=False)
    for name, value in {
        "base_model": str(demo.model), "img_folder": str(project / "img"), "output_folder": str(first),
        "change_output_name": "shapes", "network_type": "LoCon", "net_dim": 4, "alpha": 2.0, "conv_dim": 2,
        "conv_alpha": 1.0, "optimizer_type": "AdamW", "optimizer_args": {"weight_decay": "0.05", "betas": "0.9,0.98"},
        "learning_rate": 2e-3, "text_encoder_lr": 1e-3, "scheduler": "cosine", "warmup_lr_ratio": 0.34,
        "num_epochs": 1, "batch_size": 4, "train_resolution": 64, "keep_tokens": 1, "shuffle_captions": True,
        "caption_dropout_rate": 0.1, "noise_offset": 0.05, "min_snr_gamma": 5.0, "clip_skip": 1, "test_seed": 7,
        "max_clip_token_length": 150, "mixed_precision": "no", "xformers": False, "save_precision": "float",
        "training_comment": "trigger: shpz", "num_workers": 0,
    }.items():
        config.set(name, value)
    assert train_config(config).ok
    original = metadata_of(first, "shapes")
    length = (original["ss_num_epochs"], original["ss_max_train_steps"], original["ss_lr_warmup_steps"])
    assert length == ("1", "3", "1")

    asker = ScriptedAsker({"base_model": str(demo.model), "output_folder": str(again)})
    assert main(["--from-lora", str(first / "shapes.safetensors")], questions.FLOWS, asker=asker) == EXIT_OK
    assert "base_model" in asker.asked and "output_folder" in asker.asked  # the metadata holds no paths
    assert "img_folder" not in asker.asked and "net_dim" not in asker.asked  # found beside it; from the metadata
    retrained = metadata_of(again, "shapes")
    ss_keys = {key for key in original if key.startswith("ss_")} - PER_RUN_KEYS
    assert {key: retrained.get(key) for key in ss_keys} == {key: original[key] for key in ss_keys}

    elsewhere = tmp_path / "a" / "b" / "c" / "shapes.safetensors"  # far from its images: asked, with a note
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(first / "shapes.safetensors", elsewhere)
    loaded, notes = lora_metadata.load(elsewhere, TrainConfig(cuda=False))
    assert loaded.get("img_folder") is None and loaded.origin("img_folder") == "default"
    assert any("1_shapes" in note and "choose them again" in note for note in notes)
    assert loaded.get("num_epochs") == 1 and loaded.get("max_steps") is None  # counted as the user counted


@pytest.mark.parametrize("argv, sentence", [
    (["--from-lora", "missing.safetensors"], "The LoRA file missing.safetensors does not exist"),
    (["--from-lora", __file__, "--queue", "."], "Use --from-lora alone"),
])
def test_from_lora_mistakes_are_one_sentence(argv, sentence, capsys):
    assert main(argv, questions.FLOWS, train=FakeTrainer()) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(sentence)


def test_the_lora_question_refuses_a_file_that_is_not_one_in_one_sentence(tmp_path):
    notes = tmp_path / "notes.safetensors"
    notes.write_text("not a LoRA", encoding="utf-8")
    check = settings_file_problem("LoRA", ("safetensors",))
    assert "neither a settings JSON" in check(str(notes), TrainConfig(cuda=False))


def test_optimizer_arguments_of_ss_optimizer_split_outside_brackets():
    text = "weight_decay=0.1,betas=(0.9, 0.99),eps=1e-08"
    assert lora_metadata.optimizer_arguments(text) == {"weight_decay": "0.1", "betas": "0.9,0.99", "eps": "1e-08"}


@pytest.mark.parametrize("warmup, total", [(29, 100), (1, 3), (7, 70), (0, 10)])
def test_warmup_steps_come_back_as_a_ratio_that_gives_the_same_steps(warmup, total):
    ratio = lora_metadata.warmup_ratio(warmup, total)
    assert (int(total * ratio) if ratio else 0) == warmup  # sd_scripts.training.length.resolve_warmup_steps
