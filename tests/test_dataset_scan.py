"""Scanning `N_name` folders: repeats, captions, regularization balancing, steps per epoch, statistics, metadata and
every bad input an artist is likely to hand over."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_dataset_fixtures import settings_for, write_folder, write_image

from sd_scripts.dataset import scan_dataset
from sd_scripts.errors import UserFacingError

ROOT = Path(__file__).resolve().parents[1]


def test_folders_give_repeats_class_tokens_and_captions(tmp_path):
    write_folder(tmp_path / "10_my char", [(64, 64), (64, 64)], ["blue eyes, smile\nsecond line ignored", None])
    write_image(tmp_path / "2_other" / "upper.PNG", (64, 64))
    write_image(tmp_path / "2_other" / "mixed.JpEg", (64, 64))
    write_image(tmp_path / "2_other" / "flat.bmp", (64, 64))
    write_image(tmp_path / "2_other" / "web.webp", (64, 64))
    (tmp_path / "2_other" / "notes.md").write_text("not an image")
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))

    first, second = plan.subsets
    assert (first.name, first.num_repeats, first.class_tokens) == ("10_my char", 10, "my char")
    assert [image.caption for image in first.images] == ["blue eyes, smile", "my char"]
    assert (second.num_repeats, second.class_tokens, second.img_count) == (2, "other", 4)
    assert sorted(path.name for path in (image.path for image in second.images)) == [
        "flat.bmp", "mixed.JpEg", "upper.PNG", "web.webp"
    ]
    assert plan.num_train_images == 2 * 10 + 4 * 2


def test_folders_without_repeats_are_ignored_with_a_warning_naming_them(tmp_path):
    write_folder(tmp_path / "5_cat", [(64, 64)])
    write_folder(tmp_path / "cat_pictures", [(64, 64)])
    write_folder(tmp_path / "x5_cat", [(64, 64)])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    assert [subset.name for subset in plan.subsets] == ["5_cat"]
    assert any("cat_pictures" in warning and "x5_cat" in warning for warning in plan.warnings)


def test_an_image_without_caption_or_class_tokens_gets_an_empty_caption_and_a_warning(tmp_path):
    write_folder(tmp_path / "3_", [(64, 64)])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    assert plan.images[0].caption == ""
    assert any("empty caption" in warning and "img00.png" in warning for warning in plan.warnings)


def test_statistics_per_subset(tmp_path):
    folder = tmp_path / "1_x"
    write_folder(folder, [(64, 64), (64, 64), (64, 64)], ["a", None, "b"])
    (folder / "orphan.txt").write_text("caption of a deleted image", encoding="utf-8")
    (folder / "broken.png").write_bytes(b"this is not a png")
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    subset = plan.subsets[0]
    assert subset.img_count == 3
    assert subset.captions_found == 2
    assert [path.name for path in subset.images_without_caption] == ["img01.png"]
    assert [path.name for path in subset.captions_without_image] == ["orphan.txt"]
    assert [path.name for path in subset.unreadable_images] == ["broken.png"]
    assert any("broken.png" in warning and "skipped" in warning for warning in plan.warnings)


def test_steps_per_epoch_with_repeats_batches_and_several_buckets(tmp_path):
    write_folder(tmp_path / "3_a", [(512, 512)] * 3)
    write_folder(tmp_path / "2_b", [(640, 480), (640, 480), (300, 900)])
    plan = scan_dataset(settings_for(tmp_path, resolution=(512, 512), enable_bucket=True, train_batch_size=2))
    assert plan.bucket_counts == {(256, 832): 2, (512, 512): 9, (576, 448): 4}
    assert plan.batches_per_epoch == 1 + 5 + 2  # ceil(2/2) + ceil(9/2) + ceil(4/2)
    plan = scan_dataset(settings_for(tmp_path, resolution=(512, 512), enable_bucket=True, train_batch_size=4))
    assert plan.batches_per_epoch == 1 + 3 + 1


def _reg_repeats(tmp_path, train, reg):
    """Scan `train` and `reg` ({folder: image count}) and return the regularization repeats after balancing."""
    for name, count in train.items():
        write_folder(tmp_path / "train" / name, [(64, 64)] * count)
    for name, count in reg.items():
        write_folder(tmp_path / "reg" / name, [(64, 64)] * count)
    plan = scan_dataset(settings_for(tmp_path / "train", reg_data_dir=str(tmp_path / "reg"), resolution=(64, 64)))
    return plan, [image.num_repeats for image in plan.images if image.is_reg]


def test_reg_balancing_round_robin_until_as_many_samples_as_training(tmp_path):
    plan, repeats = _reg_repeats(tmp_path, {"10_a": 2}, {"3_r": 3})
    assert repeats == [7, 7, 6]  # first pass 3+3+3 = 9, then +1 round robin up to 20
    assert plan.num_train_images == 20
    assert plan.num_reg_images == 9  # sd-scripts reports the reg images x folder repeats, before balancing
    assert plan.bucket_counts == {(64, 64): 40}
    assert plan.batches_per_epoch == 40


def test_reg_balancing_one_repeat_each(tmp_path):
    _, repeats = _reg_repeats(tmp_path, {"1_a": 5}, {"1_r": 2})
    assert repeats == [3, 2]


def test_extra_reg_images_stay_unused_with_a_warning(tmp_path):
    plan, repeats = _reg_repeats(tmp_path, {"1_a": 1}, {"1_r": 3})
    assert repeats == [1, 0, 0]
    assert plan.bucket_counts == {(64, 64): 2}
    assert any("regularization" in warning and "not used" in warning for warning in plan.warnings)


def test_reg_first_pass_adds_the_whole_folder_repeats(tmp_path):
    _, repeats = _reg_repeats(tmp_path, {"2_a": 1}, {"5_r": 2})
    assert repeats == [5, 0]


def test_reg_loss_weight_is_prior_loss_weight(tmp_path):
    write_folder(tmp_path / "train" / "1_a", [(64, 64)])
    write_folder(tmp_path / "reg" / "1_r", [(64, 64)])
    plan = scan_dataset(
        settings_for(tmp_path / "train", reg_data_dir=str(tmp_path / "reg"), resolution=(64, 64), prior_loss_weight=0.5)
    )
    assert [plan.loss_weight(index, 0) for index in range(2)] == [1.0, 0.5]


def test_metadata_in_folder_mode_is_sd_scripts_json(tmp_path):
    write_folder(tmp_path / "train" / "3_a", [(512, 512)] * 2, ["Blue Eyes, smile", "blue eyes"])
    write_folder(tmp_path / "train" / "2_b", [(640, 480)])
    write_folder(tmp_path / "reg" / "1_person", [(512, 512)])
    plan = scan_dataset(
        settings_for(tmp_path / "train", reg_data_dir=str(tmp_path / "reg"), enable_bucket=True, train_batch_size=2)
    )
    metadata = plan.metadata()
    assert all(isinstance(value, str) for value in metadata.values())
    assert metadata["ss_num_train_images"] == "8"
    assert metadata["ss_num_reg_images"] == "1"
    assert metadata["ss_dataset_dirs"] == (
        '{"2_b": {"n_repeats": 2, "img_count": 1}, "3_a": {"n_repeats": 3, "img_count": 2}}'
    )
    assert metadata["ss_reg_dataset_dirs"] == '{"1_person": {"n_repeats": 1, "img_count": 1}}'
    assert json.loads(metadata["ss_tag_frequency"]) == {
        "2_b": {"b": 1}, "3_a": {"blue eyes": 2, "smile": 1}, "1_person": {"person": 1}
    }
    bucket_info = json.loads(metadata["ss_bucket_info"])
    # 512x512: 2 images x 3 + the reg image x 8 (balanced to 8 samples); 640x480 -> 576x448: 2 samples.
    assert bucket_info["buckets"] == {
        "0": {"resolution": [512, 512], "count": 14}, "1": {"resolution": [576, 448], "count": 2}
    }
    assert bucket_info["mean_img_ar_error"] == pytest.approx(abs(576 / 448 - 640 / 480) / 4)
    assert metadata["ss_num_batches_per_epoch"] == "8"  # ceil(14/2) + ceil(2/2)
    assert "ss_datasets" not in metadata


def test_metadata_bucket_info_is_null_without_buckets(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64)])
    assert scan_dataset(settings_for(tmp_path, resolution=(64, 64))).metadata()["ss_bucket_info"] == "null"


def test_without_buckets_larger_images_are_accepted_and_smaller_ones_refused_with_random_crop(tmp_path):
    write_folder(tmp_path / "1_a", [(80, 96)])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    assert plan.images[0].bucket == (64, 64)
    write_image(tmp_path / "1_a" / "small.png", (64, 48))
    assert scan_dataset(settings_for(tmp_path, resolution=(64, 64))).images[1].resized_size == (85, 64)  # enlarged
    with pytest.raises(UserFacingError, match="small.png.*smaller than the resolution"):
        scan_dataset(settings_for(tmp_path, resolution=(64, 64), random_crop=True))


def test_bucket_range_must_contain_the_resolution(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64)])
    with pytest.raises(UserFacingError, match="smallest bucket size 640"):
        scan_dataset(settings_for(tmp_path, enable_bucket=True, min_bucket_reso=640))


def test_min_and_max_bucket_reso_are_rounded_to_the_steps_with_a_warning(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64)])
    plan = scan_dataset(settings_for(tmp_path, enable_bucket=True, min_bucket_reso=300, max_bucket_reso=1000))
    assert (plan.datasets[0].params.min_bucket_reso, plan.datasets[0].params.max_bucket_reso) == (256, 1024)
    assert sum("rounded" in warning for warning in plan.warnings) == 2


def test_a_smallest_bucket_below_one_step_is_refused(tmp_path):
    """Rounded down it would be 0 and no bucket could be listed (it used to end in a ZeroDivisionError)."""
    write_folder(tmp_path / "1_a", [(64, 64)])
    with pytest.raises(UserFacingError, match="smallest bucket size 32 is below the bucket step 64"):
        scan_dataset(settings_for(tmp_path, resolution=(64, 64), enable_bucket=True, min_bucket_reso=32))


# --- bad inputs -------------------------------------------------------------------------------------------------


def test_an_empty_folder_is_explained(tmp_path):
    with pytest.raises(UserFacingError, match="is empty.*10_mychar"):
        scan_dataset(settings_for(tmp_path))


def test_only_folders_without_repeats_is_explained(tmp_path):
    write_folder(tmp_path / "my character", [(64, 64)])
    with pytest.raises(UserFacingError) as caught:
        scan_dataset(settings_for(tmp_path))
    assert "10_mychar, where 10 is the number of repeats" in caught.value.message


def test_images_directly_in_the_parent_folder_are_explained(tmp_path):
    write_image(tmp_path / "a.png", (64, 64))
    with pytest.raises(UserFacingError, match="holds images directly.*subfolder named like 10_mychar"):
        scan_dataset(settings_for(tmp_path))


def test_a_file_instead_of_a_folder(tmp_path):
    file = write_image(tmp_path / "a.png", (64, 64))
    with pytest.raises(UserFacingError, match="is a file, not a folder"):
        scan_dataset(settings_for(file))


def test_a_missing_folder(tmp_path):
    with pytest.raises(UserFacingError, match="does not exist"):
        scan_dataset(settings_for(tmp_path / "nowhere"))


def test_numbered_folders_without_any_image(tmp_path):
    (tmp_path / "10_a").mkdir()
    (tmp_path / "10_a" / "readme.txt").write_text("hi")
    with pytest.raises(UserFacingError, match="No training images were found"):
        scan_dataset(settings_for(tmp_path))


def test_an_empty_numbered_folder_beside_others_is_a_warning(tmp_path):
    (tmp_path / "5_empty").mkdir()
    write_folder(tmp_path / "5_full", [(64, 64)])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    assert [subset.name for subset in plan.datasets[0].subsets] == ["5_full"]
    assert any("5_empty" in warning and "no readable images" in warning for warning in plan.warnings)


def test_a_corrupt_only_image_is_an_error_naming_it(tmp_path):
    (tmp_path / "1_a").mkdir()
    (tmp_path / "1_a" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(UserFacingError, match="broken.jpg"):
        scan_dataset(settings_for(tmp_path))


def test_a_caption_that_is_not_utf8_is_named(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64)])
    (tmp_path / "1_a" / "img00.txt").write_bytes("café, crème".encode("cp1252"))
    with pytest.raises(UserFacingError, match=r"img00\.txt is not UTF-8.*save it with UTF-8") as caught:
        scan_dataset(settings_for(tmp_path))
    assert "\n" not in caught.value.message


def test_a_utf8_caption_with_byte_order_mark_reads_cleanly(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64)])
    (tmp_path / "1_a" / "img00.txt").write_bytes("\ufeffcafé".encode("utf-8"))
    assert scan_dataset(settings_for(tmp_path, resolution=(64, 64))).images[0].caption == "café"


def test_scanning_does_not_import_torch(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64)])
    code = (
        "import sys; from sd_scripts.dataset import DatasetSettings, scan_dataset;"
        f"plan = scan_dataset(DatasetSettings(train_data_dir={str(tmp_path)!r}, resolution=(64, 64)));"
        "print(plan.batches_per_epoch, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["1", "False"], result.stderr


def test_settings_from_train_args():
    from sd_scripts.args import TrainArgs
    from sd_scripts.dataset import DatasetSettings

    args, _ = TrainArgs.from_mapping({"train_data_dir": "x", "resolution": "512,768", "train_batch_size": 3, "seed": 5})
    settings = DatasetSettings.from_train_args(args)
    assert (settings.resolution, settings.train_batch_size, settings.seed) == ((512, 768), 3, 5)
    assert DatasetSettings.from_train_args(TrainArgs(resolution="640")).resolution == (640, 640)
    with pytest.raises(UserFacingError, match="resolution 'big' is not understood"):
        DatasetSettings.from_train_args(TrainArgs(resolution="big"))
