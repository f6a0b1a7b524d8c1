"""The look of every wizard window: one Tk root, sized for the real screen, in Sun Valley light or dark.

Sun Valley (the sv-ttk package, the look of Windows 11) themes every ttk widget; `darkdetect` tells whether the
system is in dark mode when the user asked for `--theme system`. Our own colours (red error sentences, the loss
curve, muted hints) come from one `Palette` per theme, read with `palette(widget)`, so nothing is drawn black on a
dark window.

High-DPI: on Windows the process declares itself per-monitor DPI aware *before* the first window exists, or Windows
draws the whole wizard at 96 dpi and blurs it up; Tk then measures the real pixels per inch of the screen, and its
`tk scaling` (pixels per point) is set from that. Every font is declared in points, so text grows with the screen.

Drag and drop comes from tkinterdnd2, which ships the tkDnD library for Windows, macOS and Linux; where it cannot
load (an unusual platform) the wizard works without it and says nothing.
"""

from __future__ import annotations

import ctypes
import sys
import tkinter as tk
from dataclasses import dataclass
from tkinter import font as tkfont
from tkinter import ttk
from typing import Any, Literal

from wizard.askers.tk_widgets import BOLD_FONT, QUESTION_FONT

ThemeChoice = Literal["light", "dark", "system"]
THEME_CHOICES: tuple[ThemeChoice, ...] = ("light", "dark", "system")
APP_CLASS = "LoraWizard"
DESIGN_DPI = 96.0  # Sun Valley's pixel font sizes are meant for a 96 dpi screen (Windows at 100 %)
POINTS_PER_INCH = 72.0
STANDARD_FONTS = ("TkDefaultFont", "TkTextFont", "TkFixedFont", "TkMenuFont", "TkHeadingFont", "TkCaptionFont",
                  "TkSmallCaptionFont", "TkIconFont", "TkTooltipFont")
SUN_VALLEY_FONTS = ("SunValleyCaptionFont", "SunValleyBodyFont", "SunValleyBodyStrongFont", "SunValleyBodyLargeFont",
                    "SunValleySubtitleFont", "SunValleyTitleFont", "SunValleyTitleLargeFont", "SunValleyDisplayFont")
# Windows' constants: DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2 (Windows 10 1703+), PROCESS_PER_MONITOR_DPI_AWARE
# (8.1+); FlashWindowEx's FLASHW_TRAY.
PER_MONITOR_AWARE_V2 = -4
PROCESS_PER_MONITOR_DPI_AWARE = 2
FLASHW_TRAY = 0x2


@dataclass(frozen=True)
class Palette:
    """The colours the wizard draws itself, beside what the ttk theme draws."""

    name: Literal["light", "dark"]
    background: str  # the windows' background (the theme's)
    text: str
    muted: str  # hints, captions, axis labels
    error: str  # the red sentence
    accent: str  # progress bars, the smoothed loss line
    canvas: str  # the loss curve's plot area
    grid: str
    frame: str  # the plot area's outline
    raw_line: str  # the loss of each step, under the smoothed line


LIGHT = Palette("light", background="#fafafa", text="#1c1c1c", muted="#5f5f5f", error="#c42b1c", accent="#005fb8",
                canvas="#ffffff", grid="#e5e5e5", frame="#c8c8c8", raw_line="#a9c9e8")
DARK = Palette("dark", background="#1c1c1c", text="#fafafa", muted="#a8a8a8", error="#ff99a4", accent="#57c8ff",
               canvas="#232323", grid="#3a3a3a", frame="#4a4a4a", raw_line="#2f5b7c")
THEME_NAMES = {"light": "sun-valley-light", "dark": "sun-valley-dark"}
PROGRESS_STYLE = "Wizard.Horizontal.TProgressbar"  # the training window's bars
PROGRESS_THICKNESS = "4p"


def system_theme() -> Literal["light", "dark"]:
    """The operating system's light or dark setting (light where it cannot be read)."""
    try:
        import darkdetect
    except ImportError:
        return "light"
    return "dark" if darkdetect.isDark() else "light"


def resolve_theme(choice: ThemeChoice) -> Literal["light", "dark"]:
    if choice not in THEME_CHOICES:
        raise ValueError(f"theme must be one of {', '.join(THEME_CHOICES)}, not {choice!r}")
    return system_theme() if choice == "system" else choice


def declare_dpi_awareness() -> None:
    """On Windows, ask for real pixels before any window exists; elsewhere nothing to do.

    Tries the newest call first (per-monitor v2: crisp on every monitor, also after moving the window), then the
    Windows 8.1 one, then Vista's system-wide awareness. Without any, Windows renders at 96 dpi and scales up: blurry.
    """
    windll = getattr(ctypes, "windll", None)
    if sys.platform != "win32" or windll is None:
        return
    try:
        if windll.user32.SetProcessDpiAwarenessContext(ctypes.c_void_p(PER_MONITOR_AWARE_V2)):
            return
    except (AttributeError, OSError):
        pass  # before Windows 10 1703
    try:
        windll.shcore.SetProcessDpiAwareness(PROCESS_PER_MONITOR_DPI_AWARE)
        return
    except (AttributeError, OSError):
        pass  # before Windows 8.1
    try:
        windll.user32.SetProcessDPIAware()
    except (AttributeError, OSError):
        pass  # Tk then draws at 96 dpi: still readable


def screen_dpi(root: tk.Misc) -> float:
    """Pixels per inch where the root is: Windows' own figure for its monitor, else what Tk measured at start."""
    windll = getattr(ctypes, "windll", None)
    if sys.platform == "win32" and windll is not None:
        try:
            dpi = windll.user32.GetDpiForWindow(root.winfo_id())
            if dpi:
                return float(dpi)
        except (AttributeError, OSError):
            pass  # before Windows 10 1607
    if root.tk.call("tk", "windowingsystem") == "x11":
        dpi = x11_font_dpi(root.winfo_screen())
        if dpi:
            return dpi
    return float(root.winfo_fpixels("1i"))


def x11_font_dpi(display_name: str) -> float | None:
    """`Xft.dpi` of the X resources: what GNOME, KDE and Xfce set for 150% or 200% text (the X server itself
    usually claims 96 dpi whatever the scaling). None when unset or where libX11 cannot be loaded."""
    import ctypes.util

    library = ctypes.util.find_library("X11")
    if library is None:
        return None
    xlib = ctypes.CDLL(library)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XResourceManagerString.restype = ctypes.c_char_p
    xlib.XResourceManagerString.argtypes = [ctypes.c_void_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = xlib.XOpenDisplay(display_name.encode())
    if not display:
        return None
    try:
        resources = (xlib.XResourceManagerString(display) or b"").decode("latin-1")
    finally:
        xlib.XCloseDisplay(display)
    for line in resources.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Xft.dpi":
            try:
                return float(value) if float(value) > 0 else None
            except ValueError:
                return None
    return None


def open_root(*, theme: ThemeChoice = "system", scaling: float | None = None) -> tk.Tk:
    """The wizard's one hidden Tk root, themed, with fonts in points and drag and drop when tkDnD loads.

    `scaling` is Tk's pixels per point (1.333 is a 96 dpi screen); None takes it from the screen's real DPI.
    """
    declare_dpi_awareness()  # must come before tk.Tk(): Windows fixes a process's awareness at its first window
    root = tk.Tk(className=APP_CLASS)
    root.withdraw()
    _standard_fonts_in_points(root)  # at the scaling Tk started with, which their pixel sizes were chosen for
    root.tk.call("tk", "scaling", scaling if scaling is not None else screen_dpi(root) / POINTS_PER_INCH)
    apply_theme(root, resolve_theme(theme))
    enable_drag_and_drop(root)
    return root


def apply_theme(root: tk.Tk, name: Literal["light", "dark"]) -> None:
    """Sun Valley `name` on every ttk widget, with its fonts (and Tk's) in points, and our own styles coloured."""
    import sv_ttk

    sv_ttk.set_theme(name, root)
    _fonts_in_points(root)
    colours = palette(root)
    style = ttk.Style(root)
    body = tkfont.nametofont("TkDefaultFont", root)
    for name, size in ((QUESTION_FONT, int(body.cget("size")) + 3), (BOLD_FONT, int(body.cget("size")))):
        if name not in tkfont.names(root):
            root.tk.call("font", "create", name)  # a Tcl-owned font: it lives as long as the root
        root.tk.call("font", "configure", name, "-family", body.cget("family"), "-weight", "bold", "-size", size)
    style.configure("Question.TLabel", font=QUESTION_FONT)
    style.configure("Help.TLabel", foreground=colours.text)
    style.configure("Hint.TLabel", foreground=colours.muted)
    style.configure("Error.TLabel", foreground=colours.error)
    style.configure("Treeview", rowheight=int(body.metrics("linespace") * 1.6))
    style.configure("Heading", font="TkDefaultFont")
    _progress_bar_style(style, colours, thickness=int(root.winfo_fpixels(PROGRESS_THICKNESS)))


def _progress_bar_style(style: ttk.Style, colours: Palette, thickness: int) -> None:
    """`PROGRESS_STYLE`: a flat bar in the accent colour whose thickness is in points. Sun Valley draws its bars from
    fixed-size images, a hairline that stays one at 150% and 200%; Tk's plain elements scale."""
    if "Wizard.Progressbar.trough" not in style.element_names():  # elements belong to the theme in use
        style.element_create("Wizard.Progressbar.trough", "from", "default")
        style.element_create("Wizard.Progressbar.pbar", "from", "default")
    style.layout(PROGRESS_STYLE, [("Wizard.Progressbar.trough", {
        "sticky": "nswe", "children": [("Wizard.Progressbar.pbar", {"side": "left", "sticky": "ns"})]})])
    style.configure(PROGRESS_STYLE, troughcolor=colours.grid, background=colours.accent, thickness=thickness,
                    borderwidth=0, troughrelief="flat", pbarrelief="flat")


def palette(widget: tk.Misc) -> Palette:
    """The colours that go with the theme in use."""
    return DARK if ttk.Style(widget).theme_use() == THEME_NAMES["dark"] else LIGHT


def enable_drag_and_drop(root: tk.Tk) -> bool:
    """Load tkDnD into `root`; False (and no drag and drop) where tkinterdnd2 or its library is missing."""
    try:
        from tkinterdnd2 import TkinterDnD
        TkinterDnD.require(root)
    except (ImportError, RuntimeError):
        return False
    return True


def has_drag_and_drop(widget: tk.Misc) -> bool:
    return bool(widget.tk.call("info", "commands", "::tkdnd::drop_target"))


def accept_dropped_paths(widget: tk.Misc, on_drop: Any) -> None:
    """Call `on_drop(paths, x_root, y_root)` with the files or folders dropped on `widget` and where on the screen
    they were dropped (nothing where tkDnD is missing)."""
    if not has_drag_and_drop(widget):
        return
    from tkinterdnd2 import COPY, DND_FILES

    def dropped(event: Any) -> str:
        on_drop(list(widget.tk.splitlist(event.data)), int(event.x_root), int(event.y_root))
        return COPY

    widget.drop_target_register(DND_FILES)
    widget.dnd_bind("<<Drop>>", dropped)


def flash_taskbar(window: tk.Toplevel) -> None:
    """Make the taskbar entry of `window` ask for attention once (a finished or failed training)."""
    windll = getattr(ctypes, "windll", None)
    if sys.platform == "win32" and windll is not None:
        class FlashInfo(ctypes.Structure):
            _fields_ = [("cbSize", ctypes.c_uint), ("hwnd", ctypes.c_void_p), ("dwFlags", ctypes.c_uint),
                        ("uCount", ctypes.c_uint), ("dwTimeout", ctypes.c_uint)]

        hwnd = int(window.wm_frame(), 16)
        info = FlashInfo(ctypes.sizeof(FlashInfo), hwnd, FLASHW_TRAY, 1, 0)
        try:
            windll.user32.FlashWindowEx(ctypes.byref(info))
        except (AttributeError, OSError):
            pass
    elif window.tk.call("tk", "windowingsystem") == "x11":
        set_urgency_hint(window, True)
        window.bind("<FocusIn>", lambda event: set_urgency_hint(window, False), add="+")
    else:
        window.bell()  # macOS: Tk has no dock bounce; the bell is what it offers


def set_urgency_hint(window: tk.Toplevel, urgent: bool) -> bool:
    """Set or clear the X11 urgency hint of `window` (taskbars flash or colour its entry); False without Xlib."""
    x11 = _xlib()
    if x11 is None:
        return False
    display = x11.XOpenDisplay(window.winfo_screen().encode())
    if not display:
        return False
    try:
        frame = int(window.wm_frame(), 16)
        hints_pointer = x11.XGetWMHints(display, frame)
        hints = hints_pointer.contents if hints_pointer else _WMHints()
        hints.flags = (hints.flags | URGENCY_HINT) if urgent else (hints.flags & ~URGENCY_HINT)
        x11.XSetWMHints(display, frame, ctypes.byref(hints))
        if hints_pointer:
            x11.XFree(hints_pointer)
        x11.XFlush(display)
    finally:
        x11.XCloseDisplay(display)
    return True


def has_urgency_hint(window: tk.Toplevel) -> bool:
    """Whether `window` asks for attention (for tests and for the window itself)."""
    x11 = _xlib()
    display = x11.XOpenDisplay(window.winfo_screen().encode()) if x11 is not None else None
    if not display:
        return False
    try:
        hints_pointer = x11.XGetWMHints(display, int(window.wm_frame(), 16))
        urgent = bool(hints_pointer) and bool(hints_pointer.contents.flags & URGENCY_HINT)
        if hints_pointer:
            x11.XFree(hints_pointer)
        return urgent
    finally:
        x11.XCloseDisplay(display)


URGENCY_HINT = 1 << 8  # XUrgencyHint in X11/Xutil.h


class _WMHints(ctypes.Structure):
    """XWMHints of X11/Xutil.h (Tk has no command for the urgency hint, so it is set through Xlib)."""

    _fields_ = [("flags", ctypes.c_long), ("input", ctypes.c_int), ("initial_state", ctypes.c_int),
                ("icon_pixmap", ctypes.c_ulong), ("icon_window", ctypes.c_ulong), ("icon_x", ctypes.c_int),
                ("icon_y", ctypes.c_int), ("icon_mask", ctypes.c_ulong), ("window_group", ctypes.c_ulong)]


def _xlib() -> Any:
    """libX11 through ctypes, or None where it is not there."""
    import ctypes.util

    name = ctypes.util.find_library("X11")
    if name is None:
        return None
    try:
        x11 = ctypes.CDLL(name)
    except OSError:
        return None
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XGetWMHints.restype = ctypes.POINTER(_WMHints)
    x11.XGetWMHints.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XSetWMHints.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_WMHints)]
    x11.XFree.argtypes = [ctypes.c_void_p]
    x11.XFlush.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return x11


def _standard_fonts_in_points(root: tk.Tk) -> None:
    """Tk's standard fonts in points: on X11 they come in pixels, which would ignore `tk scaling`."""
    pixels_per_point = float(root.tk.call("tk", "scaling"))
    for name in STANDARD_FONTS:
        font = tkfont.nametofont(name, root)
        size = int(font.cget("size"))
        if size < 0:
            font.configure(size=max(1, round(-size / pixels_per_point)))


def _fonts_in_points(root: tk.Tk) -> None:
    """Sun Valley's fonts in points, and Tk's default text fonts the same as its body font.

    Sun Valley declares its fonts in pixels for a 96 dpi screen; a pixel size ignores the screen's DPI. Tk's default
    text font takes Sun Valley's body font, so what the wizard measures is what the theme draws.
    """
    for name in SUN_VALLEY_FONTS:
        font = tkfont.nametofont(name, root)
        size = int(font.cget("size"))
        if size < 0:
            font.configure(size=max(1, int(-size * POINTS_PER_INCH / DESIGN_DPI)))  # whole points: 14 px, 10 pt
    body = tkfont.nametofont("SunValleyBodyFont", root)
    for name in ("TkDefaultFont", "TkTextFont"):
        tkfont.nametofont(name, root).configure(family=body.actual("family"), size=body.cget("size"))
