"""The training images: where they are, regularization images, the tag list, size and how captions are used."""

from __future__ import annotations

from wizard.config import TrainConfig
from wizard.question import Question

from questions.build import field_help, gate, is_set
from questions.checks import repeat_folders

TAG_ORDERS = ("by count", "alphabetically")
CACHE_OR_CROP = ("cache latents", "random crop")


def _store_cache_or_crop(answer: str, config: TrainConfig) -> None:
    cache = answer == "cache latents"
    config.set("cache_latents", cache)  # they don't work together: a cached latent is cropped once, for good
    config.set("random_crop", not cache)
    if not cache:
        config.set("cache_latents_to_disk", False)


PATH_QUESTIONS: list[Question] = [
    Question(
        id="img_folder", kind="folder", field="img_folder",
        text="Choose the image folder: the one that contains your <repeats>_<name> folders.",
        help=field_help("img_folder"),
        validate=repeat_folders("image folder", required=True),
    ),
]

QUESTIONS: list[Question] = [
    gate(
        "use_reg_images", "Do you want to use regularization images?",
        "Regularization (class) images keep the model from turning every person or object of the class into your "
        "subject; they double the steps per epoch. Default no.",
        fields=("reg_img_folder",),
    ),
    Question(
        id="reg_img_folder", kind="folder", field="reg_img_folder",
        text="Choose the regularization folder: the one that contains <repeats>_<name> folders.",
        help=field_help("reg_img_folder"),
        validate=repeat_folders("regularization folder", required=False),
    ),
    Question(
        id="tag_list", kind="yesno", field="tag_occurrence_txt_file",
        text="Save a text file listing every tag used in your captions?",
        help=field_help("tag_occurrence_txt_file"),
    ),
    Question(
        id="tag_list_order", kind="choice", field="sort_tag_occurrence_alphabetically", choices=TAG_ORDERS,
        when=lambda config: config.get("tag_occurrence_txt_file"),
        current=lambda config: TAG_ORDERS[1] if config.get("sort_tag_occurrence_alphabetically") else TAG_ORDERS[0],
        store=lambda answer, config: config.set("sort_tag_occurrence_alphabetically", answer == TAG_ORDERS[1]),
        text="How should the tag list be sorted?",
        help=field_help("sort_tag_occurrence_alphabetically"),
    ),
    Question(
        id="tag_list_weighting", kind="yesno", field="tag_occurrence_weighted_by_repeats",
        when=lambda config: config.get("tag_occurrence_txt_file"),
        text="Count the tags as often as training sees them (weighted by the folders' repeats)?",
        help=field_help("tag_occurrence_weighted_by_repeats"),
    ),
    Question(
        id="train_resolution", kind="int", field="train_resolution",
        text="Training resolution (width) in pixels?",
        help=field_help("train_resolution"),
    ),
    Question(
        id="height_resolution", kind="int", field="height_resolution",
        text="Training height in pixels? (leave empty to keep it square)",
        help=field_help("height_resolution"),
    ),
    Question(
        id="shuffle_captions", kind="yesno", field="shuffle_captions",
        text="Shuffle the tags of your captions?",
        help=field_help("shuffle_captions"),
    ),
    gate(
        "use_keep_tokens", "Keep the first tags of each caption in place (e.g. your trigger word)?",
        field_help("keep_tokens"),
        fields=("keep_tokens",),
        start_with={"keep_tokens": lambda config: 1},
    ),
    Question(
        id="keep_tokens", kind="int", field="keep_tokens", when=is_set("keep_tokens"),
        text="How many tags at the front stay in place?",
        help=field_help("keep_tokens"),
    ),
    Question(
        id="flip_aug", kind="yesno", field="flip_aug",
        text="Randomly flip images left-right? (more variety, but asymmetric details get mixed up)",
        help=field_help("flip_aug"),
    ),
    Question(
        id="bucket_no_upscale", kind="yesno", field="bucket_no_upscale",
        text="Prevent small images from being upscaled?",
        help=field_help("bucket_no_upscale"),
    ),
    Question(
        id="cache_or_crop", kind="choice", field=None, fields=("cache_latents", "random_crop"),
        choices=CACHE_OR_CROP,
        current=lambda config: CACHE_OR_CROP[1] if config.get("random_crop") else CACHE_OR_CROP[0],
        store=_store_cache_or_crop,
        text="Cache latents or random crop? (they don't work together)",
        help="Caching encodes every image once before training: faster and less VRAM. Random crop shows a "
             "different part of images larger than their bucket each time, which caching cannot. Default cache "
             "latents.",
    ),
    Question(
        id="cache_latents_to_disk", kind="yesno", field="cache_latents_to_disk",
        when=lambda config: config.get("cache_latents"),
        text="Keep the cached latents on disk for the next run?",
        help=field_help("cache_latents_to_disk"),
    ),
]
