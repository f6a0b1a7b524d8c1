"""sd-scripts' folder convention: the training folder is the parent of `<repeats>_<class tokens>` image folders.

`10_mychar` means "train every image in it 10 times per epoch, captioned 'mychar' when it has no caption file".
Folders whose name does not start with a whole number and `_` are ignored, as sd-scripts ignores them, but named in
a warning; the mistakes artists make most often (images straight in the parent folder, no numbered folder at all)
are explained instead of failing later. A folder that cannot be used is a problem added to the scan's list (with
the other folder's and the images' problems), so every mistake is reported at once.
"""

from __future__ import annotations

from pathlib import Path

from sd_scripts.dataset.settings import SubsetOptions
from sd_scripts.dataset.subsets import Subset, list_images
from sd_scripts.untrusted import shown

NAMING_ADVICE = "put your images in a subfolder named like 10_mychar, where 10 is the number of repeats"


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """(repeats, class tokens) from `10_my char`, or None when the part before the first `_` is not a whole number."""
    head, _, tokens = name.partition("_")
    try:
        return int(head), tokens
    except ValueError:
        return None


def discover_subsets(
    parent: str | Path, *, is_reg: bool, options: SubsetOptions, warnings: list[str], problems: list[str]
) -> list[Subset]:
    """One subset per `N_name` folder of `parent`, sorted by folder name so that every machine sees the same order;
    a parent that holds none adds its one problem to `problems`."""
    parent = Path(parent)
    role = "regularization" if is_reg else "training"
    if not parent.exists():
        problems.append(f"The {role} image folder {parent} does not exist; choose the folder again.")
        return []
    if not parent.is_dir():
        problems.append(
            f"The {role} image folder {parent} is a file, not a folder; choose the folder that holds your image "
            f"subfolders (like 10_mychar)."
        )
        return []
    try:
        folders = sorted((path for path in parent.iterdir() if path.is_dir()), key=lambda path: path.name)
        loose = list_images(parent)
    except OSError:
        problems.append(f"The {role} image folder {parent} cannot be read (it was moved or deleted, or its drive "
                        "was disconnected); reconnect or restore it and try again.")
        return []
    subsets: list[Subset] = []
    ignored: list[str] = []
    for folder in folders:
        parsed = parse_folder_name(folder.name)
        if parsed is None:
            ignored.append(folder.name)
            continue
        repeats, class_tokens = parsed
        if repeats < 1:
            warnings.append(f"The folder {folder} asks for {repeats} repeats, so its images are not used.")
            continue
        subsets.append(Subset(folder, repeats, class_tokens, is_reg, options))
    if ignored:
        warnings.append(
            f"These folders in {parent} are ignored because their names do not start with a number of repeats and "
            f"'_': {', '.join(shown(name) for name in ignored)}; rename one like 10_{shown(ignored[0])} to train it."
        )
    if subsets:
        if loose:
            warnings.append(
                f"{len(loose)} image(s) lie directly in {parent} and are not used; only images inside the numbered "
                f"subfolders are trained."
            )
    elif loose:
        problems.append(
            f"The {role} folder {parent} holds images directly, but sd-scripts reads them only from subfolders; "
            f"{NAMING_ADVICE}."
        )
    elif ignored:
        problems.append(f"No subfolder of {parent} is named with a number of repeats; {NAMING_ADVICE}.")
    elif not folders:
        problems.append(f"The {role} folder {parent} is empty; {NAMING_ADVICE}.")
    else:
        problems.append(f"The {role} folder {parent} has no subfolder with at least 1 repeat; {NAMING_ADVICE}.")
    return subsets
