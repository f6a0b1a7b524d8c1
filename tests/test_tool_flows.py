"""Each side tool's popup flow, driven by the scripted asker (questions, Back, summary with Edit and Save JSON, the
tool's result), reached from the first popup and from `--tool NAME`; and each tool's command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import questions
from sd_scripts.saving import load_lora_file, save_lora
from sd_scripts.tools import extract_lora, merge_lora, resize_lora
from tool_fixtures import one_thread, tiny_checkpoint  # noqa: F401  (autouse)
from wizard.app import EXIT_OK, main
from wizard.askers.scripted import ScriptedAsker
from wizard.question import BACK, CANCEL
from wizard.tool_flow import ToolConfig, run_tool_flow, tool_commands

ROOT = Path(__file__).resolve().parents[1]
MODULE = "lora_te_text_model_encoder_layers_0_mlp_fc1"


def small_lora(path: Path, seed: int, rank: int = 4) -> Path:
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"{MODULE}.lora_down.weight": torch.randn(rank, 32, generator=generator),
               f"{MODULE}.lora_up.weight": torch.randn(64, rank, generator=generator),
               f"{MODULE}.alpha": torch.tensor(rank / 2)}
    return save_lora(tensors, path, metadata={"ss_network_dim": str(rank)})


def run_flow(name: str, answers: dict, **asker_options) -> tuple[int, ScriptedAsker]:
    asker = ScriptedAsker(answers, **asker_options)
    return run_tool_flow(questions.TOOLS[name], asker, progress=lambda done, total, label: None), asker


def test_every_tool_is_registered_with_an_entry_in_the_first_popup():
    entries = {entry.id for entry in questions.FLOWS["what_to_do"]}
    assert set(questions.TOOLS) == {"resize", "merge", "extract", "merge_lycoris", "images"} <= entries
    for flow in questions.TOOLS.values():
        config = ToolConfig(flow.fields)
        assert {question.field for question in flow.questions} <= {field.name for field in flow.fields}
        assert all(question.help for question in flow.questions) and config.to_dict()


def test_the_resize_flow_goes_back_edits_from_the_summary_saves_its_settings_and_resizes(tmp_path):
    lora = small_lora(tmp_path / "mine.safetensors", seed=1)
    (tmp_path / "out").mkdir()
    code, asker = run_flow("resize", {
        "lora": str(lora), "method": ["sv_fro", "Fixed"], "new_rank": [8, BACK, 2],
        "dynamic_param": [BACK], "output_folder": str(tmp_path / "out"), "save_precision": "float",
        "tool_settings_folder": str(tmp_path)},
        summary_actions=["save", ("edit", "new_rank"), "start"])
    assert code == EXIT_OK
    # Back twice returned to the method; Fixed then closed the dynamic parameter
    assert asker.asked[:8] == ["lora", "method", "new_rank", "dynamic_param", "new_rank", "method", "new_rank",
                               "targets_file"]
    assert asker.asked.count("dynamic_param") == 1 and asker.asked[-1] == "new_rank"  # the summary's Edit
    tensors, metadata = load_lora_file(tmp_path / "out" / "mine-Fixed-2.safetensors")
    assert tensors[f"{MODULE}.lora_down.weight"].shape == (2, 32) and metadata["ss_network_dim"] == "2"
    (saved,) = tmp_path.glob("resize-*.json")
    assert json.loads(saved.read_text(encoding="utf-8"))["lora"] == str(lora)
    assert asker.messages[-1][1] == "Resize a LoRA: done" and "mine-Fixed-2" in asker.messages[-1][2]


def test_the_merge_flow_merges_two_loras_at_their_ratios(tmp_path):
    first, second = small_lora(tmp_path / "a.safetensors", 1), small_lora(tmp_path / "b.safetensors", 2, rank=2)
    code, asker = run_flow("merge", {
        "lora_1": str(first), "ratio_1": 0.5, "lora_2": str(second), "ratio_2": [5.0, 2.0], "lora_3": CANCEL,
        "method": "Concatenate (exact, rank = the sum)", "output_folder": str(tmp_path), "output_name": "both"})
    assert code == EXIT_OK
    assert asker.errors == [("ratio_2", "'ratio_2' is 5.0, but it must be a number from -1 to 4; correct it and "
                                        "try again.")]  # the original's slider range
    tensors, _ = load_lora_file(tmp_path / "both.safetensors")
    assert tensors[f"{MODULE}.lora_down.weight"].shape == (6, 32) and "base_model" not in asker.asked


def test_the_model_flows_merge_and_extract_on_a_tiny_checkpoint(tmp_path):
    base = tiny_checkpoint(tmp_path / "base.safetensors")
    lora = small_lora(tmp_path / "a.safetensors", 1)
    code, _ = run_flow("merge_lycoris", {"base_model": str(base), "lycoris": str(lora), "weight": 0.5,
                                         "output_folder": str(tmp_path), "output_name": "baked"})
    assert code == EXIT_OK and (tmp_path / "baked.safetensors").is_file()
    (tmp_path / "x").mkdir()
    code, asker = run_flow("extract", {"model_tuned": str(tmp_path / "baked.safetensors"), "model_org": str(base),
                                       "linear": 4.0, "output_folder": str(tmp_path / "x")})
    tensors, _ = load_lora_file(tmp_path / "x" / "baked-fixed-4.safetensors")
    assert code == EXIT_OK and f"{MODULE}.lora_down.weight" in tensors
    code, asker = run_flow("merge", {"merge_into": "Into a model", "base_model": str(base), "lora_1": str(base),
                                     "lora_2": CANCEL, "output_folder": str(tmp_path), "output_name": "wrong"})
    assert asker.messages[-1][0] == "error" and "not a LoRA or LyCORIS file" in asker.messages[-1][2]


def test_the_first_popup_and_the_tool_option_open_a_tools_popups(tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    Image.new("RGB", (200, 130)).save(source / "one.png")
    (source / "one.txt").write_text("caption", encoding="utf-8")
    answers = {"what_to_do": "Resize images", "src_folder": str(source), "dst_folder": str(tmp_path),
               "sizes": ["640x640", "128x128"]}
    asker = ScriptedAsker(answers)
    assert main([], questions.FLOWS, tools=tool_commands(questions.TOOLS), asker=asker) == EXIT_OK
    assert asker.errors[0][0] == "sizes"  # not one of the offered sizes
    assert (tmp_path / "128x128" / "one.txt").read_text(encoding="utf-8") == "caption"
    with Image.open(tmp_path / "128x128" / "one.png") as image:
        assert image.size == (128, 64)  # 157x102 after scaling, floored to multiples of 64

    asker = ScriptedAsker({**answers, "dst_folder": str(tmp_path / "again")})
    (tmp_path / "again").mkdir()
    assert main(["--tool", "images"], questions.FLOWS, tools=tool_commands(questions.TOOLS), asker=asker) == EXIT_OK
    assert asker.asked[0] == "src_folder" and (tmp_path / "again" / "128x128" / "one.png").is_file()


def test_each_command_line_runs_with_sd_scripts_option_names(tmp_path, capsys):
    first, second = small_lora(tmp_path / "a.safetensors", 1), small_lora(tmp_path / "b.safetensors", 2)
    tools = tool_commands(questions.TOOLS)
    assert tools["resize"](["--model", str(first), "--save_to", str(tmp_path / "r.safetensors"), "--new_rank", "2",
                            "--save_precision", "fp16", "--verbose"]) == 0
    assert "Average Frobenius norm retention" in capsys.readouterr().out
    assert merge_lora.main(["--models", str(first), str(second), "--ratios", "1", "-0.5", "--new_rank", "4",
                            "--save_to", str(tmp_path / "m.safetensors")]) == 0
    assert merge_lora.main(["--models", str(first), "--ratios", "1", "--save_to", str(tmp_path / "m.safetensors")]) \
        == 2
    assert "already exists" in capsys.readouterr().err
    for module in (resize_lora, merge_lora, extract_lora):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--dynamic_method", "--sd_model", "--concat", "--model_org", "--clamp_quantile", "--min_diff"):
        assert option in help_text
    loha = tmp_path / "loha.safetensors"
    save_lora({f"{MODULE}.hada_w1_a": torch.zeros(64, 2), f"{MODULE}.hada_w1_b": torch.zeros(2, 32)}, loha)
    result = subprocess.run([sys.executable, "-m", "sd_scripts.tools.resize_lora", "--model", str(loha),
                             "--save_to", str(tmp_path / "x.safetensors")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "loha.safetensors is a LoHa, which the resizer cannot read" in result.stderr


class LabelledAsker(ScriptedAsker):
    """The scripted asker, keeping the start button's label of each summary."""

    def __init__(self, answers: dict) -> None:
        super().__init__(answers)
        self.start_labels: list[str] = []

    def summary(self, rows, title, *, start_label="Start training"):
        self.start_labels.append(start_label)
        return super().summary(rows, title, start_label=start_label)


def test_a_tools_summary_names_its_action_and_heads_its_rows_with_the_tool(tmp_path):
    lora = small_lora(tmp_path / "mine.safetensors", seed=1)
    asker = LabelledAsker({"lora": str(lora), "new_rank": 2, "output_folder": str(tmp_path), "save_precision": "fp16"})
    assert run_tool_flow(questions.TOOLS["resize"], asker, progress=lambda done, total, label: None) == EXIT_OK
    assert asker.start_labels == ["Start resizing"]
    (rows,) = asker.summaries
    assert {row.topic for row in rows} == {"Resize a LoRA"}  # one heading: no nameless topic row
    # changed = answered with something else than the default; fp16 was answered but is the default
    assert {row.field for row in rows if row.changed} == {"lora", "new_rank", "output_folder"}


def test_the_tool_option_gives_everything_after_the_tools_name_to_the_tool_help_included(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--tool", "resize", "--help"], questions.FLOWS, tools=tool_commands(questions.TOOLS))
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "--dynamic_method" in printed and "--load-json" not in printed  # the tool's options, not the app's
