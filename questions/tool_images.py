"""The "Resize images" popups (the original's image_resize.py): the image folder, where the copies go, the sizes
(the original offered 832, 768, 512, 384, 256 and 128), the filter; copies are PNG, sides divisible by 64, captions
copied along; then `sd_scripts.tools.image_resize` runs."""

from __future__ import annotations

from wizard.tool_flow import Progress, ToolConfig, ToolFlow

from questions.tool_common import ask, by_name, field

OFFERED_SIZES = ("832x832", "768x768", "512x512", "384x384", "256x256", "128x128")
DIVISIBLE_BY = 64

FIELDS = (
    field("src_folder", str, None, "Image folder", "The folder with your images and captions; it is only read.",
          path="folder"),
    field("dst_folder", str, None, "Output folder", "One folder per size is made here (e.g. 512x512/).",
          path="folder"),
    field("sizes", str, "512x512,384x384,256x256,128x128", "Sizes", "Each copy has at most this many pixels, "
          f"aspect ratio kept, sides divisible by {DIVISIBLE_BY}. Offered: {', '.join(OFFERED_SIZES)}.",
          nullable=False),
    field("interpolation", str, "lanczos4", "Filter", "lanczos4: sharpest; area: smoothest when shrinking a lot; "
          "cubic: in between.", choices=("area", "cubic", "lanczos4"), nullable=False),
)
_F = by_name(FIELDS)


def _sizes_problem(answer: str, config: ToolConfig) -> str | None:
    unknown = [size for size in answer.replace(" ", "").split(",") if size not in OFFERED_SIZES]
    if not answer.strip() or unknown:
        return f"Choose sizes among {', '.join(OFFERED_SIZES)}, separated by commas."
    return None


QUESTIONS = (
    ask(_F["src_folder"], "Choose the folder with the images to resize.", required=True),
    ask(_F["dst_folder"], "Choose where the resized copies go.", required=True),
    ask(_F["sizes"], "Which sizes? (separated by commas)", validate=_sizes_problem),
    ask(_F["interpolation"], "Which resampling filter?"),
)


def run(config: ToolConfig, progress: Progress) -> str:
    from sd_scripts.tools.image_resize import resize_images

    result = resize_images(config.get("src_folder"), config.get("dst_folder"), config.get("sizes").replace(" ", ""),
                           divisible_by=DIVISIBLE_BY, interpolation=config.get("interpolation"), save_as_png=True,
                           copy_associated_files=True, progress=progress)
    return result.report()


FLOW = ToolFlow(name="images", title="Resize images", fields=FIELDS, questions=QUESTIONS, run=run,
                cli_module="sd_scripts.tools.image_resize", start_label="Start resizing")
