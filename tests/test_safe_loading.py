"""Safe loading everywhere (issue 13 item 3): no file a user is given can run code.

- A pickle (`.ckpt`/`.pt`) that would run code is refused, through every entry point that takes one: the base model,
  the VAE, network weights, a state folder to resume, the LoRA tools, the settings loader; the test's payload
  writes a marker file when it runs, and the marker is never written.
- The source never unpickles unsafely, evaluates text, or starts a shell (checked with `ast`, as
  tests/test_house_rules.py checks the layering).
- optimizer_args / network_args are parsed as literals only; `__import__('os').system(...)` is refused in a sentence.
- JSON and TOML settings are parsed, never evaluated: code in a text setting stays text.
- A LoRA's metadata and tensor names are untrusted text wherever they are shown: control characters escaped,
  at most 200 characters a value.
"""

from __future__ import annotations

import ast
import functools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from bad_input_builders import LORA_KEYS, fake_sd1_model, good_folder, wizard_config, write_malicious_pickle
from bad_input_builders import write_os_system_pickle
from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.untrusted import shown

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [path for folder in ("sd_scripts", "wizard", "questions", "tools", "benchmarks")
           for path in sorted((ROOT / folder).rglob("*.py"))] + [ROOT / "popup_main.py"]
CONTAINS_CODE = "contains code, not only weights, and was not opened for your safety"
CODE = "__import__('os').system('touch {marker}')"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran.txt"


@pytest.fixture
def evil(tmp_path: Path, marker: Path) -> Path:
    return write_malicious_pickle(tmp_path / "evil.pt", marker)


# --- pickles ------------------------------------------------------------------------------------------------------


def test_the_payload_runs_code_when_unpickled_unsafely(tmp_path):
    """The proof that the marker means something: plain pickle.loads runs it."""
    proof = tmp_path / "proof.txt"
    pickle.loads(write_malicious_pickle(tmp_path / "plain.pt", proof, as_torch_file=False).read_bytes())
    assert proof.read_text() == "code ran"


@pytest.mark.parametrize("suffix", [".ckpt", ".pt"])
def test_a_base_model_pickle_is_refused_by_the_loader(tmp_path, marker, suffix):
    from sd_scripts.models import load_base_model

    for path in (write_malicious_pickle(tmp_path / f"zip{suffix}", marker),
                 write_os_system_pickle(tmp_path / f"legacy{suffix}", marker)):
        with pytest.raises(UserFacingError, match=CONTAINS_CODE):
            load_base_model(path)
    assert not marker.exists()


def test_a_vae_pickle_is_refused(evil, marker):
    from sd_scripts.models.loading import load_vae

    with pytest.raises(UserFacingError, match=CONTAINS_CODE):
        load_vae(evil)
    assert not marker.exists()


def test_network_weights_and_a_state_to_resume_are_checked_before_loading(tmp_path, evil, marker):
    from sd_scripts.saving.lora_file import load_lora_file
    from sd_scripts.training.validation import check_input_files

    model = fake_sd1_model(tmp_path / "base.safetensors")
    with pytest.raises(UserFacingError, match=f"evil.pt {CONTAINS_CODE}"):
        check_input_files(TrainArgs(pretrained_model_name_or_path=str(model), network_weights=str(evil)))
    state = tmp_path / "run-state"
    state.mkdir()
    write_malicious_pickle(state / "optimizer.pt", marker)
    with pytest.raises(UserFacingError, match=f"optimizer.pt {CONTAINS_CODE}"):
        check_input_files(TrainArgs(pretrained_model_name_or_path=str(model), resume=str(state)))
    with pytest.raises(UserFacingError, match=f"evil.pt {CONTAINS_CODE}"):
        load_lora_file(evil)  # the loader itself, with weights_only=True
    assert not marker.exists()


def test_the_lora_tools_refuse_pickles_that_run_code(tmp_path, evil, marker, capsys):
    from sd_scripts.tools import extract_lora, merge_lora, merge_lycoris, resize_lora

    ckpt = write_malicious_pickle(tmp_path / "evil.ckpt", marker)
    runs = [
        resize_lora.main(["--model", str(evil), "--save_to", str(tmp_path / "r.safetensors")]),
        merge_lora.main(["--models", str(evil), str(evil), "--ratios", "1", "1", "--save_to",
                         str(tmp_path / "m.safetensors")]),
        extract_lora.main(["--model_org", str(ckpt), "--model_tuned", str(ckpt), "--save_to",
                           str(tmp_path / "e.safetensors")]),
        merge_lycoris.main([str(ckpt), str(evil), str(tmp_path / "l.safetensors")]),
    ]
    assert runs == [2, 2, 2, 2]
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 4
    assert all(CONTAINS_CODE in line for line in err.strip().splitlines()), err
    assert not marker.exists() and not list(tmp_path.glob("*.safetensors"))


def test_the_settings_loader_never_unpickles(evil, marker):
    from wizard.formats import settings_file

    with pytest.raises(UserFacingError, match="is not a text file or a LoRA"):
        settings_file.load(evil)
    assert not marker.exists()


# --- the source -------------------------------------------------------------------------------------------------


@functools.cache
def calls(path: Path) -> tuple[ast.Call, ...]:
    """Every call in a source file (parsed once for the three checks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return tuple(node for node in ast.walk(tree) if isinstance(node, ast.Call))


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def is_text(node: ast.AST) -> bool:
    """A string literal, an f-string, or text joined with + or %: a command line for a shell to split."""
    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return True
    return isinstance(node, ast.BinOp) and (is_text(node.left) or is_text(node.right))


def test_every_torch_load_is_weights_only():
    found = []
    for path in SOURCES:
        for call in calls(path):
            if dotted(call.func) == "torch.load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in call.keywords)
                found.append((path.relative_to(ROOT), call.lineno, safe))
    assert found, "the scan found no torch.load at all"
    assert [place for place in found if not place[2]] == []


def test_nothing_is_evaluated_unpickled_or_run_through_a_shell():
    """numpy.load stays allowed as long as it keeps its default allow_pickle=False (the latent caches' .npz)."""
    forbidden = {"eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "pickle.Unpickler",
                 "marshal.load", "marshal.loads", "yaml.load", "yaml.unsafe_load", "os.system", "os.popen",
                 "shelve.open"}
    problems = []
    for path in SOURCES:
        for call in calls(path):
            name = dotted(call.func)
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name in forbidden:
                problems.append(f"{where} calls {name}")
            if name in ("np.load", "numpy.load") and any(k.arg == "allow_pickle" for k in call.keywords):
                problems.append(f"{where} lets numpy unpickle")  # npz caches hold arrays only
            if name.startswith("subprocess."):
                if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in call.keywords):
                    problems.append(f"{where} passes shell= to {name}")
                if call.args and is_text(call.args[0]):
                    problems.append(f"{where} gives {name} a command string instead of an argument list")
    assert problems == []


def test_literal_eval_is_the_only_text_to_value_parser_and_only_for_optimizer_args():
    users = [str(path.relative_to(ROOT)) for path in SOURCES for call in calls(path)
             if dotted(call.func) == "ast.literal_eval"]
    assert users == ["sd_scripts/optimizer_kinds.py"]


# --- options parsed as literals -----------------------------------------------------------------------------------


def test_optimizer_args_with_code_are_refused_in_a_sentence(tmp_path, marker):
    from sd_scripts.training.validation import validate_args

    args = TrainArgs(pretrained_model_name_or_path="m.safetensors", train_data_dir="i", output_dir="o",
                     optimizer_args=[f"weight_decay={CODE.format(marker=marker)}"])
    with pytest.raises(UserFacingError) as caught:
        validate_args(args)
    assert caught.value.message.startswith("The optimizer option 'weight_decay=__import__('os')")
    assert "has a value that is not a number, True/False or a list" in caught.value.message
    assert not marker.exists()


def test_optimizer_args_with_code_in_a_wizard_json_are_refused_at_preflight(tmp_path, marker):
    from wizard.preflight import preflight_report

    images = good_folder(tmp_path / "images" / "10_mychar").parent
    config = wizard_config(fake_sd1_model(tmp_path / "base.safetensors"), images, tmp_path / "out",
                           optimizer_args={"weight_decay": CODE.format(marker=marker)})
    problem = preflight_report(config, read_gpu=lambda: None, check_torch=lambda: None).problem
    assert problem is not None and "is not a number, True/False or a list" in problem
    assert not marker.exists()


@pytest.mark.parametrize("optimizer", ["os.system", "subprocess.Popen", "builtins.exec"])
def test_an_optimizer_type_that_is_no_optimizer_is_never_built(optimizer):
    from sd_scripts.optimizer_kinds import optimizer_class, resolve_optimizer

    with pytest.raises(UserFacingError, match=f"The optimizer '{optimizer}'") as caught:
        optimizer_class(resolve_optimizer(optimizer))
    assert "choose one of AdamW" in caught.value.message


def test_network_args_with_code_are_refused_in_a_sentence(marker):
    from sd_scripts.networks.kinds import parse_network_args

    with pytest.raises(UserFacingError, match=r"The network option conv_dim=__import__.* is not valid; conv_dim "
                                              r"needs"):
        parse_network_args("networks.lora", [f"conv_dim={CODE.format(marker=marker)}"])
    assert not marker.exists()


def test_code_in_json_and_toml_text_settings_stays_text(tmp_path, marker):
    from wizard.config import CONFIG_VERSION
    from wizard.formats import settings_file

    code = CODE.format(marker=marker)
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"config_version": CONFIG_VERSION, "training_comment": code}), encoding="utf-8")
    assert settings_file.load(saved)[0].get("training_comment") == code
    toml = tmp_path / "run.toml"
    toml.write_text(f'training_comment = "{code}"\n', encoding="utf-8")
    assert TrainArgs.from_toml(toml)[0].training_comment == code
    assert not marker.exists()


# --- a LoRA's metadata is untrusted text ----------------------------------------------------------------------------


def printable(text: str) -> bool:
    return shown(text, len(text)) == text


def hostile_lora(path: Path, extra_key: str | None = None) -> Path:
    from safetensors.numpy import save_file

    names = ["lora_unet_down_blocks_0_attentions_0_proj_in"] + ([extra_key] if extra_key else [])
    tensors = {}
    for name in names:
        tensors[f"{name}.lora_down.weight"] = np.ones((2, 8), dtype=np.float32)
        tensors[f"{name}.lora_up.weight"] = np.ones((8, 2), dtype=np.float32)
        tensors[f"{name}.alpha"] = np.array(2.0, dtype=np.float32)
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_output_name": "../../outside\x1b[2J",
        "ss_training_comment": "A" * 1_000_000,
        "ss_sd_model_name": "\x1b]0;owned\x07model\u202egnp.exe",
        "ss_base_model_version": "future_model\r\n" * 5000,
        "ss_network_args": "{not json",
        "ss_network_dim": "Dynamic",
        "ss_num_epochs": "many", "ss_max_train_steps": "lots",
        "ss_v2": "False",
        "ss_clip_skip": "maybe",
        "ss_learning_rate": "\x00",
        "ss_dataset_dirs": json.dumps({"../../etc": {"n_repeats": 1, "img_count": 1}}),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_train_again_like_a_hostile_lora_shows_only_escaped_short_text(tmp_path):
    from wizard.formats import settings_file

    config, notes = settings_file.load(hostile_lora(tmp_path / "gift.safetensors"))
    assert notes and all(printable(note) and len(note) < 700 for note in notes), notes
    assert any("future_model\\x0d\\x0a" in note for note in notes)  # escaped, not acted on
    assert config.origin("change_output_name") == "default"  # a path is never taken as the output name
    assert config.origin("training_comment") == "default"  # a megabyte comment is not taken over
    assert config.origin("img_folder") == "default"  # "../../etc" is not looked for


def test_a_tensor_name_with_control_characters_is_escaped_in_refusals():
    from sd_scripts.networks.file_kinds import describe_keys

    described = describe_keys(["\x1b[31mred\x1b[0m.weight"])
    assert "\\x1b[31mred" in described and printable(described)


def test_resizing_a_lora_with_broken_metadata_and_hostile_names(tmp_path, capsys):
    from sd_scripts.tools import resize_lora

    lora = hostile_lora(tmp_path / "in.safetensors", extra_key="lora_unet_\x1b[31mred")
    out = tmp_path / "out.safetensors"
    assert resize_lora.main(["--model", str(lora), "--save_to", str(out), "--new_rank", "1", "--new_conv_rank", "1",
                             "--verbose"]) == 0
    printed = capsys.readouterr().out
    assert "lora_unet_\\x1b[31mred" in printed and "\x1b" not in printed
    from safetensors import safe_open

    with safe_open(str(out), framework="numpy") as handle:
        assert handle.metadata()["ss_network_args"] == "{not json"  # kept as it was, not parsed into a crash


def test_shown_escapes_controls_and_caps_length():
    assert shown("a\x1b[2Jb\r\n\u202ec\u200bd\tz") == "a\\x1b[2Jb\\x0d\\x0a\\u202ec\\u200bd\\x09z"
    assert shown("é 图 ok") == "é 图 ok"
    long = shown("x" * 5000)
    assert long == "x" * 200 + "... (5000 characters in all)"
    assert shown(LORA_KEYS[0]) == LORA_KEYS[0]
