"""Every kind of popup at Tk scaling 1.0 and 2.0: it fits on the screen, no text is cut, and a screenshot is kept.

The screenshots go to test-artifacts/screenshots/ (git-ignored) for a person to look at; the checks compare what
each widget asked Tk for with what it got, on the mapped window.
"""

from __future__ import annotations

import gc
import subprocess
import tkinter as tk
from typing import Any, Callable

import pytest

from questions import FLOWS
from wizard.askers.base import SummaryRow
from wizard.askers.tk_asker import TkAsker
from wizard.config import TrainConfig
from wizard.question import Question
from xvfb import ARTIFACTS, VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

SCREENSHOTS = ARTIFACTS / "screenshots"
LONG_HELP = ("Bigger learns more detail but makes a larger file and can copy the training images too closely. "
             "32 is a good start for a character; a style may want 64 or 128. Alpha, asked next, scales the "
             "learning: half of the dimension is the usual choice, and a smaller alpha trains more gently.")
SAMPLES: list[tuple[str, Question, Any]] = [
    ("yesno", Question("v2", "yesno", "Is your base model based on Stable Diffusion 2.x?",
                       help="Most anime and realistic models are SD 1.5 based: answer no. Answer yes for models "
                            "made from SD 2.0 or 2.1."), False),
    ("choice", Question("scheduler", "choice", "Which learning rate scheduler?",
                        help="How the learning rate changes during training. Cosine with restarts is a safe choice.",
                        choices=("cosine_with_restarts", "cosine", "polynomial", "constant",
                                 "constant_with_warmup", "linear")), "cosine_with_restarts"),
    ("int", Question("net_dim", "int", "Network dimension (rank)?", help=LONG_HELP), 32),
    ("float", Question("learning_rate", "float", "Learning rate?", help="1e-4 is the usual value."), 0.0001),
    ("text", Question("output_name", "text", "Name of the LoRA file?", help="Leave empty for the default."), "mychar"),
    ("list", Question("keep_tags", "list", "Tags to keep at the front of every caption?"), ["mychar", "red hair"]),
    ("file", Question("base_model", "file", "Which base model do you train on?",
                      help="A .safetensors or .ckpt file of a Stable Diffusion 1.x or 2.x model.",
                      extensions=("safetensors", "ckpt")), "/home/artist/models/anything-v4.5-pruned.safetensors"),
    ("folder", Question("img_folder", "folder", "Where are your training images?",
                        help="The folder that holds the N_name subfolders, like 10_mychar."), None),
]
ERROR = "Please type a number from 1 to 1024."


def problems_with_fit(root: tk.Tk, path: str) -> list[str]:
    """What does not fit in the mapped toplevel `path`: the window on the screen, each widget in what it asked for."""
    call = root.tk.call
    width, height = call("winfo", "width", path), call("winfo", "height", path)
    problems = []
    if call("winfo", "reqwidth", path) > call("winfo", "screenwidth", path) or \
            call("winfo", "reqheight", path) > call("winfo", "screenheight", path):
        problems.append(f"{path} asks for more than the screen")
    right, bottom = call("winfo", "rootx", path) + width, call("winfo", "rooty", path) + height

    def visit(widget: str) -> None:
        for child in root.tk.splitlist(call("winfo", "children", widget)):
            if call("winfo", "toplevel", child) != child and call("winfo", "ismapped", child):
                kind = call("winfo", "class", child)
                got = (call("winfo", "width", child), call("winfo", "height", child))
                wanted = (call("winfo", "reqwidth", child), call("winfo", "reqheight", child))
                if kind in ("TLabel", "TButton", "TEntry", "Text") and (got[0] < wanted[0] or got[1] < wanted[1]):
                    problems.append(f"{kind} {child} got {got}, asked for {wanted}")
                if call("winfo", "rootx", child) + got[0] > right or call("winfo", "rooty", child) + got[1] > bottom:
                    problems.append(f"{kind} {child} reaches outside its window")
                visit(child)

    visit(path)
    return problems


def inspect_then_close(asker: TkAsker, display: VirtualDisplay, shot_name: str | None, found: list[str]) -> None:
    """On the Tk thread, once the newest dialog is mapped: check its fit, photograph it, close it with Escape."""
    root = asker.root

    def when_mapped() -> None:
        dialogs = [w for w in root.winfo_children() if isinstance(w, tk.Toplevel)]
        if not dialogs or not dialogs[-1].winfo_ismapped():
            root.after(20, when_mapped)
            return
        dialog = dialogs[-1]
        root.update_idletasks()
        found.extend(problems_with_fit(root, str(dialog)))
        if shot_name is not None:
            subprocess.run(["xdotool", "mousemove", "0", "0"], env=display.env, check=True, timeout=30)  # no hover
            subprocess.run(["import", "-window", str(int(dialog.wm_frame(), 16)), str(SCREENSHOTS / shot_name)],
                           env=display.env, check=True, timeout=30, capture_output=True)
        dialog.event_generate("<Escape>")

    root.after(20, when_mapped)


@pytest.fixture(params=[1.0, 2.0], ids=["scaling1", "scaling2"])
def scaled_asker(request, virtual_display: VirtualDisplay):
    asker = TkAsker(scaling=request.param)
    yield asker, request.param
    asker.close()
    del asker
    gc.collect()


def test_every_kind_fits_and_is_photographed(scaled_asker, virtual_display):
    asker, scaling = scaled_asker
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shows: list[tuple[str, Callable[[], Any]]] = [
        (kind, lambda q=question, d=default, k=kind: asker.ask(q, d, can_go_back=True,
                                                               error=ERROR if k == "int" else None))
        for kind, question, default in SAMPLES]
    rows = [SummaryRow(f"field_{n}", f"Setting number {n}", "/home/artist/lora/images" if n % 4 == 0 else str(n),
                       ("asked", "loaded", "default")[n % 3]) for n in range(70)]
    shows.append(("summary", lambda: asker.summary(rows, "Check your settings")))
    for kind, show in shows:
        found: list[str] = []
        inspect_then_close(asker, virtual_display, f"{kind}@{scaling:g}x.png", found)
        show()
        assert not found, f"{kind} at scaling {scaling}: {found}"
        assert (SCREENSHOTS / f"{kind}@{scaling:g}x.png").stat().st_size > 1000


def test_every_real_question_fits_at_double_scaling(virtual_display):
    """The questions the wizard really asks, with their real help texts, at scaling 2.0 on a 1280x1024 screen."""
    asker = TkAsker(scaling=2.0)
    config = TrainConfig(cuda=False)
    try:
        for question in [q for flow in FLOWS.values() for q in flow]:
            found: list[str] = []
            inspect_then_close(asker, virtual_display, None, found)
            default = question.current(config) if question.current else (
                config.get(question.field) if question.field else None)
            asker.ask(question, default, can_go_back=True)
            assert not found, f"{question.id}: {found}"
    finally:
        asker.close()
        del asker
        gc.collect()


def test_the_fit_check_sees_a_dialog_taller_than_the_screen(virtual_display):
    asker = TkAsker(scaling=2.0)
    try:
        found: list[str] = []
        inspect_then_close(asker, virtual_display, None, found)
        asker.ask(Question("essay", "text", "Too long?", help=LONG_HELP * 12), "", can_go_back=False)
        assert any("more than the screen" in problem for problem in found)
    finally:
        asker.close()
        del asker
        gc.collect()
