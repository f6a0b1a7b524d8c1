"""Per-monitor DPI awareness on Windows is declared before the first window, and is a no-op elsewhere.

Windows fixes a process's DPI awareness when its first window is made; declared later, it is ignored and the wizard
is drawn at 96 dpi and blurred up. These tests run anywhere: a fake `ctypes.windll` records the Windows calls and a
fake `tk.Tk` records when the first window would be made.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import tkinter as tk
from tkinter import ttk
from typing import Any

import pytest

from wizard.askers import tk_theme
from xvfb import shared_virtual_display, virtual_display  # noqa: F401  (fixtures)


class FirstWindow(Exception):
    """Raised by the fake tk.Tk: nothing after the first window matters here."""


class FakeFunction:
    def __init__(self, calls: list[tuple[str, Any]], name: str, result: Any = 1, missing: bool = False) -> None:
        self.calls, self.name, self.result, self.missing = calls, name, result, missing

    def __call__(self, *arguments: Any) -> Any:
        if self.missing:
            raise AttributeError(f"function '{self.name}' not found")  # what ctypes says for a missing export
        values = tuple(ctypes.c_ssize_t(argument.value).value if isinstance(argument, ctypes.c_void_p) else argument
                       for argument in arguments)  # a handle-sized value, read back as the signed number it was
        self.calls.append((self.name, values))
        return self.result


class FakeLibrary:
    def __init__(self, calls: list[tuple[str, Any]], name: str, functions: dict[str, dict[str, Any]]) -> None:
        for function, options in functions.items():
            setattr(self, function, FakeFunction(calls, f"{name}.{function}", **options))


def fake_windows(monkeypatch: pytest.MonkeyPatch, *, user32: dict[str, dict[str, Any]],
                 shcore: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    """Pretend to be Windows with these user32/shcore functions; returns the calls, the first window included."""
    calls: list[tuple[str, Any]] = []

    class Windll:
        pass

    windll = Windll()
    windll.user32 = FakeLibrary(calls, "user32", user32)
    windll.shcore = FakeLibrary(calls, "shcore", shcore)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "windll", windll, raising=False)

    def first_window(*arguments: Any, **keywords: Any) -> None:
        calls.append(("tk.Tk", ()))
        raise FirstWindow

    monkeypatch.setattr(tk_theme.tk, "Tk", first_window)
    return calls


def test_windows_10_declares_per_monitor_v2_before_the_first_window(monkeypatch):
    calls = fake_windows(monkeypatch, user32={"SetProcessDpiAwarenessContext": {}, "SetProcessDPIAware": {}},
                         shcore={"SetProcessDpiAwareness": {}})
    with pytest.raises(FirstWindow):
        tk_theme.open_root()
    # DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2 is ((DPI_AWARENESS_CONTEXT)-4) in Windows' WinUser.h
    assert calls == [("user32.SetProcessDpiAwarenessContext", (-4,)), ("tk.Tk", ())]


def test_windows_8_1_falls_back_to_per_monitor_awareness_of_shcore(monkeypatch):
    calls = fake_windows(monkeypatch, user32={"SetProcessDpiAwarenessContext": {"missing": True},
                                              "SetProcessDPIAware": {}},
                         shcore={"SetProcessDpiAwareness": {}})
    with pytest.raises(FirstWindow):
        tk_theme.open_root()
    # PROCESS_PER_MONITOR_DPI_AWARE = 2 in Windows' ShellScalingApi.h
    assert calls == [("shcore.SetProcessDpiAwareness", (2,)), ("tk.Tk", ())]


def test_a_refused_context_and_an_old_windows_end_at_system_awareness(monkeypatch):
    calls = fake_windows(monkeypatch, user32={"SetProcessDpiAwarenessContext": {"result": 0},
                                              "SetProcessDPIAware": {}},
                         shcore={"SetProcessDpiAwareness": {"missing": True}})
    with pytest.raises(FirstWindow):
        tk_theme.open_root()
    assert calls == [("user32.SetProcessDpiAwarenessContext", (-4,)), ("user32.SetProcessDPIAware", ()),
                     ("tk.Tk", ())]


def test_elsewhere_nothing_is_called(monkeypatch):
    calls = fake_windows(monkeypatch, user32={"SetProcessDpiAwarenessContext": {}, "SetProcessDPIAware": {}},
                         shcore={"SetProcessDpiAwareness": {}})
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(FirstWindow):
        tk_theme.open_root()
    assert calls == [("tk.Tk", ())]


def test_the_theme_choice_follows_the_system_only_when_asked(monkeypatch):
    import darkdetect

    monkeypatch.setattr(darkdetect, "isDark", lambda: True)
    assert tk_theme.resolve_theme("system") == "dark"
    assert tk_theme.resolve_theme("light") == "light"
    monkeypatch.setattr(darkdetect, "isDark", lambda: None)  # what darkdetect answers where it cannot tell
    assert tk_theme.resolve_theme("system") == "light"
    with pytest.raises(ValueError):
        tk_theme.resolve_theme("blue")


def test_on_x11_the_desktops_font_dpi_sets_the_scaling(virtual_display):
    """GNOME, KDE and Xfce say 200% text as `Xft.dpi: 192` in the X resources, while the X server keeps claiming
    96 dpi; the wizard reads the resources (`xprop` plays the desktop here)."""
    xprop = ["xprop", "-display", virtual_display.name, "-root"]
    keeper = tk.Tk()  # a client kept connected: Xvfb forgets the resources when its last client leaves
    try:
        subprocess.run(xprop + ["-f", "RESOURCE_MANAGER", "8s", "-set", "RESOURCE_MANAGER",
                                "Xft.antialias:\t1\nXft.dpi:\t192\n"], check=True)
        root = tk_theme.open_root(theme="light")
        try:
            assert tk_theme.x11_font_dpi(virtual_display.name) == 192.0
            assert float(root.tk.call("tk", "scaling")) == pytest.approx(192 / 72, rel=0.01)  # Tk's unit: pixels per point
            bar = ttk.Progressbar(root, style=tk_theme.PROGRESS_STYLE)
            assert abs(bar.winfo_reqheight() - 4 * 192 / 72) <= 1  # the training bars are 4 points thick
        finally:
            root.destroy()
        subprocess.run(xprop + ["-remove", "RESOURCE_MANAGER"], check=True)
        assert tk_theme.x11_font_dpi(virtual_display.name) is None
    finally:
        keeper.destroy()
