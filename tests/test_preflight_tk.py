"""The report popup under Xvfb: Enter starts, the Back button goes back, Escape cancels, and a report that cannot
start has no Start button."""

from __future__ import annotations

import gc

import pytest

from test_tk_fixtures import answer_on_screen
from wizard.askers.tk_asker import TkAsker
from wizard.askers.tk_report import show_report
from xvfb import VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

TITLE = "Before training starts"
REPORT = "\n\n".join(
    ["Images and captions\nFolder\tImages\tCaptions\n10_mychar\t12\t12\n1_person (regularization)\t40\t40"]
    + [f"Section {number}\n" + "A long line of the report that wraps in the window. " * 4 for number in range(30)])


@pytest.fixture(params=[1.33, 2.66], ids=["100%", "200%"])
def asker(virtual_display: VirtualDisplay, request) -> TkAsker:
    made = TkAsker(scaling=request.param)
    yield made
    made.close()
    del made
    gc.collect()


@pytest.mark.parametrize(("act", "expected"), [
    (lambda display, seen: display.key(seen.window, "Return"), "start"),
    (lambda display, seen: display.click(*seen.buttons["Back"]), "back"),
    (lambda display, seen: display.key(seen.window, "Escape"), "cancel"),  # after the question below, answered Leave
])
def test_the_report_answers_start_back_and_cancel(virtual_display, asker, act, expected):
    def work(reader):
        seen = reader.look(TITLE)
        screen_width, screen_height = virtual_display.width, virtual_display.height
        assert seen.width <= screen_width and seen.height <= screen_height  # long reports scroll instead
        assert set(seen.buttons) == {"Start", "Back", "Cancel"}
        act(virtual_display, seen)
        if expected == "cancel":  # leaving would lose the answers: it asks first
            virtual_display.click(*reader.look("Leave without training?").buttons["Leave"])

    assert answer_on_screen(asker.root, lambda: show_report(asker.root, TITLE, REPORT), work) == expected


def test_a_report_that_cannot_start_offers_back_and_cancel_only(virtual_display, asker):
    def work(reader):
        seen = reader.look(TITLE)
        assert set(seen.buttons) == {"Back", "Cancel"}
        virtual_display.key(seen.window, "Return")  # Enter presses the focused Back

    answer = answer_on_screen(
        asker.root, lambda: show_report(asker.root, TITLE, "Training cannot start: no images.", can_start=False),
        work)
    assert answer == "back"
