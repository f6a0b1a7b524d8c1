"""The "Extract a LoRA or LoCon" popups (the original's lora_locon_extract.py and lycoris_extract.py): the tuned
model and its base, the mode, the linear and conv dims (or thresholds), one extraction or the original's text file
of several, the output; then `sd_scripts.tools.extract_lora` runs."""

from __future__ import annotations

from pathlib import Path

from wizard.tool_flow import Progress, ToolConfig, ToolFlow

from questions.tool_common import DEVICES, ask, by_name, field, output_fields, output_questions

MODES = ("fixed", "threshold", "ratio", "quantile")

FIELDS = (
    field("model_tuned", str, None, "Tuned model", "The fine-tuned checkpoint to take the changes from.",
          path="file", extensions=("safetensors", "ckpt")),
    field("model_org", str, None, "Base model", "The model it was fine-tuned from.", path="file",
          extensions=("safetensors", "ckpt")),
    field("mode", str, "fixed", "Mode", "fixed: the dims are ranks. threshold: keep singular values above the "
          "number. ratio: above number x the largest (0-1). quantile: the share of the sum of singular values "
          "(0-1).", choices=MODES, nullable=False),
    field("linear", float, 32.0, "Linear dim", "Rank (fixed) or the mode's number for the attention and MLP "
          "layers.", minimum=0.0, nullable=False),
    field("conv", float, 0.0, "Conv dim", "The same for the conv 3x3 layers; 0 makes a plain LoRA, more a LoCon.",
          minimum=0.0, nullable=False),
    field("targets_file", str, None, "Several extractions (text file)", "Optional: '<linear> <conv>' per line "
          "(the original's extract text file); each line makes <name>-<mode>-<linear>-<conv>.", path="file",
          extensions=("txt",)),
    *output_fields("Default: the tuned model's name; '-<mode>-<linear>-<conv>' is added."),
    field("device", str, "cpu", "Device", "Where the SVDs run: cuda (a GPU) is much faster.", choices=DEVICES,
          nullable=False),
)
_F = by_name(FIELDS)


def _above_zero(answer: float, config: ToolConfig) -> str | None:
    if answer <= 0:
        return "Give a number above 0."
    if config.get("mode") in ("ratio", "quantile") and answer > 1:
        return f"The {config.get('mode')} mode needs a number between 0 and 1."
    return None


def _conv_problem(answer: float, config: ToolConfig) -> str | None:
    return None if answer == 0 else _above_zero(answer, config)


QUESTIONS = (
    ask(_F["model_tuned"], "Choose the fine-tuned model.", required=True),
    ask(_F["model_org"], "Choose the model it was fine-tuned from.", required=True),
    ask(_F["mode"], "How should each layer's rank be chosen?"),
    ask(_F["linear"], "Linear dim (or the mode's number)?", validate=_above_zero),
    ask(_F["conv"], "Conv dim (or the mode's number)? 0 for a plain LoRA.", validate=_conv_problem),
    ask(_F["targets_file"], "Extract several times from a text file? (Cancel or leave empty for one)"),
    *output_questions(_F),
    ask(_F["device"], "Run on the CPU or the GPU (cuda)?"),
)


def run(config: ToolConfig, progress: Progress) -> str:
    from sd_scripts.tools.extract_lora import ExtractTarget, extract_loras, read_targets_file

    mode = config.get("mode")
    if config.get("targets_file"):
        targets = read_targets_file(config.get("targets_file"), mode=mode)
    else:
        targets = [ExtractTarget(config.get("linear"), config.get("conv") or None, mode)]
    name = config.get("output_name") or Path(config.get("model_tuned")).stem
    folder = Path(config.get("output_folder"))
    jobs = [(folder / f"{name}-{target.name_suffix()}.safetensors", target) for target in targets]
    paths = extract_loras(config.get("model_org"), config.get("model_tuned"), jobs,
                          save_precision=config.get("save_precision"), device=config.get("device"), progress=progress)
    return "Saved:\n" + "\n".join(str(path) for path in paths)


FLOW = ToolFlow(name="extract", title="Extract a LoRA or LoCon", fields=FIELDS, questions=QUESTIONS, run=run,
                cli_module="sd_scripts.tools.extract_lora", start_label="Start extracting")
