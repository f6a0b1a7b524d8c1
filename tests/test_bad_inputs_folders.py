"""Bad-input corpus, folders (issue 13 item 1): names without `N_`, `0_x`, nested folders, links and link loops,
spaces and non-ASCII everywhere, a read-only output folder, the output inside the images, a folder that vanishes.

sd-scripts' convention (train_util's DreamBooth subsets): only `<repeats>_<tokens>` folders directly inside the
training folder are read, not their subfolders; 0 repeats means the images are not used.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bad_input_builders import fake_sd1_model, good_folder, no_model_loading, settings_for, snapshot  # noqa: F401
from bad_input_builders import trainer_refusal, wizard_config, write_image
from sd_scripts.dataset import scan_dataset
from sd_scripts.dataset.plan import DatasetProblems
from sd_scripts.dataset.settings import SubsetOptions
from sd_scripts.dataset.subsets import Subset, read_subset
from sd_scripts.errors import UserFacingError
from wizard.askers.scripted import ScriptedAsker
from wizard.preflight import confirm_preflight, preflight_report


def report(config):
    return preflight_report(config, read_gpu=lambda: None, check_torch=lambda: None)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return fake_sd1_model(tmp_path / "model" / "base.safetensors")


def test_a_folder_without_repeats_beside_a_good_one_is_named_with_the_fix(tmp_path):
    good_folder(tmp_path / "10_mychar")
    good_folder(tmp_path / "extra shots")
    plan = scan_dataset(settings_for(tmp_path))
    assert [subset.name for subset in plan.subsets] == ["10_mychar"]
    assert any("ignored because their names do not start with a number of repeats" in warning
               and "extra shots" in warning and "rename one like 10_extra shots" in warning
               for warning in plan.warnings)


def test_only_folders_without_repeats_is_one_sentence(tmp_path):
    good_folder(tmp_path / "mychar")
    with pytest.raises(UserFacingError) as caught:
        scan_dataset(settings_for(tmp_path))
    assert f"No subfolder of {tmp_path} is named with a number of repeats" in caught.value.message
    assert "10_mychar, where 10 is the number of repeats" in caught.value.message


def test_zero_repeats_leave_a_folder_out_with_a_warning(tmp_path):
    good_folder(tmp_path / "10_mychar")
    good_folder(tmp_path / "0_x")
    plan = scan_dataset(settings_for(tmp_path))
    assert [subset.name for subset in plan.subsets] == ["10_mychar"]
    assert any("0_x asks for 0 repeats, so its images are not used" in warning for warning in plan.warnings)


def test_images_in_a_nested_folder_are_named_as_not_trained(tmp_path):
    folder = good_folder(tmp_path / "10_mychar")
    write_image(folder / "more" / "deep.png")
    plan = scan_dataset(settings_for(tmp_path))
    assert sorted(image.path.name for image in plan.images) == ["good0.png", "good1.png"]
    assert any(f"The folder {folder} has subfolders with images that are not trained" in warning
               and ": more;" in warning for warning in plan.warnings)


def test_linked_images_and_a_linked_folder_are_trained(tmp_path):
    elsewhere = good_folder(tmp_path / "elsewhere" / "shots", count=1)
    images = tmp_path / "images"
    folder = good_folder(images / "10_mychar", count=1)
    (folder / "linked.png").symlink_to(elsewhere / "good0.png")
    (images / "5_linked").symlink_to(elsewhere, target_is_directory=True)
    plan = scan_dataset(settings_for(images))
    assert sorted((image.path.parent.name, image.path.name) for image in plan.images) == [
        ("10_mychar", "good0.png"), ("10_mychar", "linked.png"), ("5_linked", "good0.png")]


def test_link_loops_and_dangling_links_end_in_a_warning_not_a_hang(tmp_path):
    folder = good_folder(tmp_path / "10_mychar")
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a folder that holds itself
    (folder / "self.png").symlink_to(folder / "self.png")  # a file link to itself
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    (tmp_path / "5_circle").symlink_to(tmp_path / "5_circle")  # a numbered folder link to itself
    plan = scan_dataset(settings_for(tmp_path))
    assert sorted(image.path.name for image in plan.images) == ["good0.png", "good1.png"]
    assert any("point to no file (or to themselves) and are skipped: gone.png, self.png" in warning
               for warning in plan.warnings)


def test_spaces_and_non_ascii_in_every_path(tmp_path):
    root = tmp_path / "my files ü 图"
    images = root / "images été"
    folder = images / "10_ça va"
    for stem in ("photo 1 é", "照片 2"):
        write_image(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text("ça va, 你好", encoding="utf-8")
    model = fake_sd1_model(root / "models ö" / "base model ü.safetensors")
    output = root / "out put ñ"
    config = wizard_config(model, images, output)
    result = report(config)
    assert result.can_start, result.problem
    assert result.top_tags == [("ça va", 2), ("你好", 2)]
    assert confirm_preflight(config, ScriptedAsker(report_actions=["back"])) == "back"
    saved = (output / "preflight.txt").read_text(encoding="utf-8")
    assert "10_ça va" in saved and "ça va (2)" in saved


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder nobody may write to: permission bits for a normal user; for root (who ignores them) a read-only
    tmpfs mount, where the kernel refuses every write."""
    folder = tmp_path / "read only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and a read-only folder cannot be mounted here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_output_folder_is_refused_before_the_model_loads(tmp_path, model, read_only_folder,
                                                                      no_model_loading):
    images = good_folder(tmp_path / "images" / "10_mychar").parent
    config = wizard_config(model, images, read_only_folder / "run")
    result = report(config)
    assert result.problem == (f"The output folder {read_only_folder} cannot be written to (it is read-only, or you "
                              "have no rights there); choose another output folder or change its permissions.")
    from wizard.translate import to_train_args

    assert trainer_refusal(to_train_args(config)) == result.problem
    assert list(read_only_folder.iterdir()) == []


def test_the_output_inside_the_image_folder_is_refused(tmp_path, model, no_model_loading):
    from wizard.translate import to_train_args

    images = good_folder(tmp_path / "images" / "10_mychar").parent
    before = snapshot(tmp_path / "images")
    config = wizard_config(model, images, images / "10_mychar" / "lora")
    problem = report(config).problem
    assert problem is not None and problem.startswith(f"The output folder {images / '10_mychar' / 'lora'} is inside "
                                                      f"the training image folder {images}")
    assert "mixed with your images and trained by the next run" in problem
    assert trainer_refusal(to_train_args(config)) == problem
    assert snapshot(tmp_path / "images") == before
    beside = report(wizard_config(model, images, images / "lora output"))  # a folder the scan ignores
    assert beside.can_start, beside.problem


def test_a_folder_removed_after_it_was_chosen_is_named(tmp_path, model):
    images = good_folder(tmp_path / "share" / "images" / "10_mychar").parent
    config = wizard_config(model, images, tmp_path / "out")
    for path in sorted(images.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    images.rmdir()  # the network drive went away between the question and the scan
    assert report(config).problem == f"The training image folder {images} does not exist; choose the folder again."
    assert not (tmp_path / "out").exists()


def test_a_folder_that_vanishes_during_the_scan_is_named(tmp_path):
    folder = good_folder(tmp_path / "10_mychar")
    subset = Subset(folder, 10, "mychar", False, SubsetOptions(caption_extension=".txt"))
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    warnings: list[str] = []
    problems: list[str] = []
    read_subset(subset, 0, warnings, problems)
    assert problems == [f"The image folder {folder} cannot be read any more (it was moved or deleted, or its drive "
                        "was disconnected); reconnect or restore it and try again."]


def test_a_training_and_a_regularization_folder_are_both_reported(tmp_path):
    good_folder(tmp_path / "images" / "no repeats")
    (tmp_path / "reg").mkdir()
    with pytest.raises(DatasetProblems) as caught:
        scan_dataset(settings_for(tmp_path / "images", reg_data_dir=str(tmp_path / "reg")))
    assert len(caught.value.problems) == 2
    assert "No subfolder of" in caught.value.problems[0]
    assert f"The regularization folder {tmp_path / 'reg'} is empty" in caught.value.problems[1]
