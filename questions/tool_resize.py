"""The "Resize a LoRA" popups (the original's lora_resize.py): the LoRA, fixed rank or a dynamic method, one resize or
the original's text file of several, the output; then `sd_scripts.tools.resize_lora` runs."""

from __future__ import annotations

from pathlib import Path

from wizard.tool_flow import Progress, ToolConfig, ToolFlow

from questions.tool_common import DEVICES, ask, by_name, field, output_fields, output_questions

FIXED = "Fixed"
METHODS = (FIXED, "sv_ratio", "sv_fro", "sv_cumulative")

FIELDS = (
    field("lora", str, None, "LoRA to resize", "A LoRA or LoCon file (.safetensors, .ckpt, .pt).", path="file",
          extensions=("safetensors", "ckpt", "pt")),
    field("method", str, FIXED, "Method", "Fixed: every layer gets the new rank. sv_ratio, sv_fro, sv_cumulative "
          "(sd-scripts' dynamic methods): each layer keeps the rank its singular values need, up to the new rank.",
          choices=METHODS, nullable=False),
    field("new_rank", int, 16, "New rank", "The rank of the result (with a dynamic method, the highest rank a layer "
          "may keep).", minimum=1, maximum=1024, nullable=False),
    field("dynamic_param", float, 0.9, "Dynamic parameter", "sv_ratio: keep singular values above the largest / this "
          "(e.g. 10); sv_fro: the share of the Frobenius norm to keep (e.g. 0.9); sv_cumulative: the share of the sum "
          "of singular values (e.g. 0.9).", minimum=0.0, nullable=False),
    field("targets_file", str, None, "Several resizes (text file)", "Optional: a text file with one rank per line "
          "(Fixed) or '<dynamic_param> <max_rank>' per line; each line makes one file <name>-<method>-<value>.",
          path="file", extensions=("txt",)),
    *output_fields("Default: the LoRA's name; '-<method>-<value>' is added."),
    field("device", str, "cpu", "Device", "Where the SVDs run: cuda (a GPU) is faster for large LoRAs.",
          choices=DEVICES, nullable=False),
)
_F = by_name(FIELDS)


def _dynamic(config: ToolConfig) -> bool:
    return config.get("method") != FIXED


def _param_problem(answer: float, config: ToolConfig) -> str | None:
    if config.get("method") == "sv_ratio" and answer <= 1:
        return "sv_ratio needs a number above 1 (e.g. 10)."
    if config.get("method") in ("sv_fro", "sv_cumulative") and not 0 < answer <= 1:
        return f"{config.get('method')} needs a share between 0 and 1 (e.g. 0.9)."
    return None


QUESTIONS = (
    ask(_F["lora"], "Choose the LoRA to resize.", required=True),
    ask(_F["method"], "How should the new rank be chosen?"),
    ask(_F["new_rank"], "New rank (dim)? With a dynamic method: the highest rank a layer may keep."),
    ask(_F["dynamic_param"], "The dynamic method's parameter?", when=_dynamic, validate=_param_problem),
    ask(_F["targets_file"], "Resize several times from a text file? (Cancel or leave empty for one resize)"),
    *output_questions(_F),
    ask(_F["device"], "Run on the CPU or the GPU (cuda)?"),
)


def run(config: ToolConfig, progress: Progress) -> str:
    from sd_scripts.tools.resize_lora import ResizeTarget, read_targets_file, resize_many

    method = None if config.get("method") == FIXED else config.get("method")
    if config.get("targets_file"):
        targets = read_targets_file(config.get("targets_file"), method=method)
    else:
        targets = [ResizeTarget(config.get("new_rank"), None, method, config.get("dynamic_param") if method else None)]
    results = resize_many([config.get("lora")], config.get("output_folder"), targets,
                          name=config.get("output_name") or Path(config.get("lora")).stem,
                          save_precision=config.get("save_precision"), device=config.get("device"), progress=progress)
    lines = [f"{result.path} (mean Frobenius norm kept: "
             f"{sum(m.fro_retained for m in result.modules) / len(result.modules):.1%})" for result in results]
    return "Saved:\n" + "\n".join(lines)


FLOW = ToolFlow(name="resize", title="Resize a LoRA", fields=FIELDS, questions=QUESTIONS, run=run,
                cli_module="sd_scripts.tools.resize_lora", start_label="Start resizing")
