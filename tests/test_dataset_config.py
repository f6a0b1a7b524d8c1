"""`--dataset_config` TOML: several datasets and subsets, inheritance subset > dataset > general > settings,
`ss_datasets` metadata, and one-sentence errors for mistakes in the file."""

import json

import pytest
from test_dataset_fixtures import write_folder

from sd_scripts.dataset import DatasetSettings, epoch_batches, scan_dataset
from sd_scripts.errors import UserFacingError

CONFIG = """
[general]
shuffle_caption = true
keep_tokens = 1
caption_extension = ".txt"

[[datasets]]
resolution = 64
batch_size = 2

  [[datasets.subsets]]
  image_dir = "chars"
  num_repeats = 3
  class_tokens = "mychar"
  keep_tokens = 2

  [[datasets.subsets]]
  image_dir = "style"
  flip_aug = true

[[datasets]]
resolution = [64, 96]
enable_bucket = true
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 32
shuffle_caption = false

  [[datasets.subsets]]
  image_dir = "chars"
  caption_extension = ".caption"
"""


@pytest.fixture
def config_file(tmp_path):
    write_folder(tmp_path / "chars", [(64, 64), (64, 64)], ["a, b, c", None])
    write_folder(tmp_path / "style", [(64, 96)], ["style tag"])
    path = tmp_path / "dataset.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_datasets_subsets_and_inheritance(config_file):
    plan = scan_dataset(DatasetSettings(dataset_config=str(config_file), train_data_dir="ignored", seed=1))
    chars, style, chars_again = plan.subsets
    assert (chars.num_repeats, chars.class_tokens, chars.is_reg) == (3, "mychar", False)
    options = chars.options
    assert (options.keep_tokens, options.shuffle_caption, options.caption_extension) == (2, True, ".txt")
    options = style.options
    assert (style.num_repeats, style.class_tokens, options.keep_tokens, options.flip_aug) == (1, None, 1, True)
    assert (chars_again.options.shuffle_caption, chars_again.options.caption_extension) == (False, ".caption")
    assert [image.caption for image in chars_again.images] == ["", ""]  # no .caption files, no class tokens

    first, second = plan.datasets
    assert (first.params.resolution, first.params.batch_size, first.params.enable_bucket) == ((64, 64), 2, False)
    assert (second.params.resolution, second.params.batch_size, second.params.bucket_reso_steps) == ((64, 96), 1, 32)
    assert plan.num_train_images == 2 * 3 + 1 + 2
    assert plan.batches_per_epoch == 4 + 2  # ceil(7/2) in the first dataset, 2 single batches in the second
    assert len(epoch_batches(plan, 1)) == plan.batches_per_epoch
    # no-bucket mode crops the 64x96 style image to 64x64
    assert plan.images[2].bucket == (64, 64)


def test_ss_datasets_metadata(config_file):
    metadata = scan_dataset(DatasetSettings(dataset_config=str(config_file), seed=1)).metadata()
    datasets = json.loads(metadata["ss_datasets"])
    assert [dataset["resolution"] for dataset in datasets] == [[64, 64], [64, 96]]
    assert datasets[0]["is_dreambooth"] is True
    assert datasets[0]["min_bucket_reso"] is None and datasets[1]["min_bucket_reso"] == 32
    assert datasets[0]["bucket_info"] is None and datasets[1]["bucket_info"]["buckets"]["0"]["count"] == 2
    assert datasets[0]["subsets"][0] == {
        "img_count": 2, "num_repeats": 3, "color_aug": False, "flip_aug": False, "random_crop": False,
        "shuffle_caption": True, "keep_tokens": 2, "image_dir": "chars", "class_tokens": "mychar", "is_reg": False,
    }
    # the same folder used twice is listed as "chars (2)"; its tags count once
    assert json.loads(metadata["ss_dataset_dirs"]) == {
        "chars": {"n_repeats": 3, "img_count": 2},
        "style": {"n_repeats": 1, "img_count": 1},
        "chars (2)": {"n_repeats": 1, "img_count": 2},
    }
    assert json.loads(metadata["ss_tag_frequency"]) == {
        "chars": {"a": 1, "b": 1, "c": 1, "mychar": 1}, "style": {"style tag": 1}
    }
    assert "ss_reg_dataset_dirs" not in metadata and "ss_bucket_info" not in metadata


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "chars"\nface_crop_aug_range = [1, 2]\n',
         "face_crop_aug_range is not supported"),
        ('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nnum_repeats = 2\n', "has no image_dir"),
        ('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "chars"\nnum_repeats = "many"\n',
         "'num_repeats' is 'many', but it must be a whole number"),
        ('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "missing"\n', "is not a folder"),
        ('[general]\nshuffle_caption = true\n', "lists no \\[\\[datasets\\]\\]"),
        ('[[datasets]\n', "cannot be read"),
    ],
)
def test_mistakes_in_the_file_are_one_sentence_errors(tmp_path, text, message):
    write_folder(tmp_path / "chars", [(64, 64)])
    path = tmp_path / "dataset.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserFacingError, match=message):
        scan_dataset(DatasetSettings(dataset_config=str(path)))
