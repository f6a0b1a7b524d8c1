"""A virtual screen for the popup tests: its own Xvfb, and xdotool / ImageMagick helpers to drive and photograph it.

The popups are real Tk windows; the tests press their keys and click their buttons the way a person would, through
the X server. Missing tools make the tests FAIL with a message naming ./run_tests.sh (which installs them), unless
WIZARD_ALLOW_NO_DISPLAY=1 is set, for machines that cannot have them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

TOOLS = {"Xvfb": "xvfb", "xdotool": "xdotool", "import": "imagemagick", "xdpyinfo": "x11-utils",
         "xwininfo": "x11-utils"}
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def require_display_tools() -> None:
    """Fail (or, with WIZARD_ALLOW_NO_DISPLAY=1, skip) when the virtual screen cannot be made."""
    missing = sorted(package for tool, package in TOOLS.items() if shutil.which(tool) is None)
    if not missing:
        return
    message = f"The popup tests need {', '.join(missing)}: run ./run_tests.sh, which installs them."
    if os.environ.get("WIZARD_ALLOW_NO_DISPLAY") == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


class VirtualDisplay:
    """An Xvfb server on a display number it picks itself, and the xdotool verbs the tests use on it."""

    def __init__(self, width: int = 1280, height: int = 1024) -> None:
        self.width, self.height = width, height
        read_end, write_end = os.pipe()
        # -displayfd: the server chooses a free display number and writes it to us once it accepts clients
        self._server = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_end), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
            pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_end)
        with os.fdopen(read_end) as announced:
            number = announced.readline().strip()
        if not number:
            self._server.kill()
            raise RuntimeError("Xvfb did not start (no display number announced).")
        self.name = f":{number}"
        self.env = {**os.environ, "DISPLAY": self.name}
        self._wait_until_ready()

    def _wait_until_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while subprocess.run(["xdpyinfo"], env=self.env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb on {self.name} did not answer within {timeout} s.")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.terminate()
        try:
            self._server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()

    def xdotool(self, *arguments: str, timeout: float = 20.0) -> str:
        result = subprocess.run(["xdotool", *arguments], env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"xdotool {' '.join(arguments)} failed: {result.stderr.strip()}")
        return result.stdout

    def find_window(self, title_pattern: str, timeout: float = 20.0) -> str:
        """The id of the visible window whose title matches the regular expression; waits for it to appear.

        A window that closes while xdotool walks the window tree (the previous dialog going away) makes it fail with
        BadWindow; the search is then made again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = self.xdotool("search", "--sync", "--onlyvisible", "--name", title_pattern,
                                     timeout=max(deadline - time.monotonic(), 0.1))
                return found.split()[0]
            except subprocess.TimeoutExpired:
                raise AssertionError(f"No window titled like {title_pattern!r} appeared within {timeout} s.") from None
            except RuntimeError as error:
                if "BadWindow" not in str(error) or time.monotonic() > deadline:
                    raise

    def wait_gone(self, window: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.is_visible(window):
            if time.monotonic() > deadline:
                raise AssertionError(f"Window {window} is still shown after {timeout} s.")
            time.sleep(0.05)

    def is_visible(self, window: str) -> bool:
        """Whether the window exists and is shown (a toplevel's own id or its titled wrapper's)."""
        state = subprocess.run(["xwininfo", "-id", window], env=self.env, capture_output=True, text=True)
        return state.returncode == 0 and "IsViewable" in state.stdout

    # No `--sync` on windowfocus or mousemove: the X server applies a focus change or a move before the keys and
    # clicks that follow it on the same connection, and `--sync` waits 15 s for a move to a point the pointer is at.

    def key(self, window: str, *keys: str) -> None:
        """Press keys (xdotool names: Return, Escape, Tab, shift+Tab, Down, ctrl+Return) in `window`."""
        self.xdotool("windowfocus", window, "key", "--clearmodifiers", "--delay", "30", *keys)

    def type(self, window: str, text: str) -> None:
        self.xdotool("windowfocus", window, "type", "--clearmodifiers", "--delay", "10", text)

    def click(self, x: int, y: int) -> None:
        """A left click at a point of the screen."""
        self.xdotool("mousemove", str(x), str(y), "click", "1")

    def close(self, window: str) -> None:
        """What a window manager does when its close button is clicked: send WM_DELETE_WINDOW to the window.

        Xvfb runs no window manager (so there is no button to click); the request is the same X message."""
        x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XInternAtom.restype = ctypes.c_ulong
        x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        x11.XFlush.argtypes = [ctypes.c_void_p]
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        display = x11.XOpenDisplay(self.name.encode())
        if not display:
            raise RuntimeError(f"cannot open display {self.name}")
        try:
            event = _ClientMessage(type=CLIENT_MESSAGE, display=display, window=int(window), format=32,
                                   message_type=x11.XInternAtom(display, b"WM_PROTOCOLS", 0))
            event.data[0] = x11.XInternAtom(display, b"WM_DELETE_WINDOW", 0)
            event.data[1] = 0  # CurrentTime
            x11.XSendEvent(display, int(window), 0, 0, ctypes.byref(event))
            x11.XFlush(display)
        finally:
            x11.XCloseDisplay(display)

    def window_geometry(self, window: str) -> tuple[int, int, int, int]:
        """x, y, width, height of a window on the screen."""
        values = dict(line.split("=", 1) for line in
                      self.xdotool("getwindowgeometry", "--shell", window).split())
        return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["import", "-window", "root", str(path)], env=self.env, check=True, timeout=30,
                       capture_output=True)
        return path


CLIENT_MESSAGE = 33  # X.h


class _ClientMessage(ctypes.Structure):
    """XClientMessageEvent of Xlib.h, padded to the size of an XEvent (24 longs)."""

    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                ("format", ctypes.c_int), ("data", ctypes.c_long * 5), ("pad", ctypes.c_long * 12)]


@pytest.fixture(scope="session")
def shared_virtual_display() -> VirtualDisplay:
    """One Xvfb kept until the end of the session: Tk keeps its connection to a display even after its windows are
    gone, and a server stopped under it would end this whole process with an X I/O error."""
    require_display_tools()
    display = VirtualDisplay()
    yield display
    display.stop()


@pytest.fixture
def virtual_display(shared_virtual_display: VirtualDisplay, monkeypatch: pytest.MonkeyPatch) -> VirtualDisplay:
    """The virtual screen, with DISPLAY pointing at it while the test runs."""
    monkeypatch.setenv("DISPLAY", shared_virtual_display.name)
    return shared_virtual_display
