"""The tag list beside a LoRA: counts per folder, weighting by repeats, both orders, stripping, UTF-8, no overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sd_scripts.dataset import DatasetPlan, DatasetSettings, scan_dataset
from wizard.tag_list import count_tags, write_tag_list

HEADER = "Below is a list of keywords used during the training of mylora:"


def add_images(folder: Path, captions: list[str | None]) -> None:
    """One 64 px image per caption; None means no caption file (the folder's class tokens are used)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, caption in enumerate(captions):
        Image.new("RGB", (64, 64), (number * 40 % 256, 90, 160)).save(folder / f"img{number}.png")
        if caption is not None:
            (folder / f"img{number}.txt").write_bytes(caption.encode("utf-8"))


def plan_of(img_folder: Path, reg_folder: Path | None = None) -> DatasetPlan:
    return scan_dataset(DatasetSettings(train_data_dir=str(img_folder), caption_extension=".txt",
                                        reg_data_dir=str(reg_folder) if reg_folder else None,
                                        resolution=(64, 64), seed=1))


@pytest.fixture
def two_folders(tmp_path: Path) -> DatasetPlan:
    images = tmp_path / "images"
    add_images(images / "2_alice", ["alice, smile", "alice, red hat, smile", "alice, smile"])
    add_images(images / "5_bob", ["bob, red hat", None])  # the second image is trained with its class tokens "bob"
    add_images(tmp_path / "reg" / "1_person", ["person, never in the list"])
    return plan_of(images, tmp_path / "reg")


def test_counts_per_folder_and_in_total_leave_regularization_out(two_folders: DatasetPlan, tmp_path: Path):
    counts = count_tags(two_folders)
    assert list(counts) == ["2_alice", "5_bob"]
    assert counts["2_alice"] == {"alice": 3, "smile": 3, "red hat": 1}
    assert counts["5_bob"] == {"bob": 2, "red hat": 1}

    path = write_tag_list(two_folders, tmp_path / "mylora.txt", lora_name="mylora")
    assert path.read_text(encoding="utf-8").splitlines() == [
        HEADER,
        "[3] alice", "[3] smile", "[2] red hat", "[2] bob",
        "", "In 2_alice:", "[3] alice", "[3] smile", "[1] red hat",
        "", "In 5_bob:", "[2] bob", "[1] red hat",
    ]


def test_weighting_by_repeats_counts_what_training_sees(two_folders: DatasetPlan, tmp_path: Path):
    counts = count_tags(two_folders, weighted_by_repeats=True)
    assert counts["2_alice"] == {"alice": 6, "smile": 6, "red hat": 2}
    assert counts["5_bob"] == {"bob": 10, "red hat": 5}

    lines = write_tag_list(two_folders, tmp_path / "mylora.txt", lora_name="mylora",
                           weighted_by_repeats=True).read_text(encoding="utf-8").splitlines()
    assert lines[0] == ("Below is a list of keywords used during the training of mylora "
                        "(counts weighted by the folders' repeats):")
    assert lines[1:5] == ["[10] bob", "[7] red hat", "[6] alice", "[6] smile"]


def test_alphabetical_order_sorts_by_tag_and_by_count_keeps_ties_in_first_seen_order(tmp_path: Path):
    add_images(tmp_path / "images" / "1_x", ["zebra, apple, Mango", "mango, zebra"])
    plan = plan_of(tmp_path / "images")
    by_count = write_tag_list(plan, tmp_path / "a.txt", lora_name="mylora").read_text(encoding="utf-8")
    alphabetical = write_tag_list(plan, tmp_path / "b.txt", lora_name="mylora", alphabetical=True)
    assert by_count.splitlines()[1:] == ["[2] zebra", "[1] apple", "[1] Mango", "[1] mango"]
    # one folder: no per-folder section; code point order as the original tool (capitals first)
    assert alphabetical.read_text(encoding="utf-8").splitlines()[1:] == [
        "[1] Mango", "[1] apple", "[1] mango", "[2] zebra"]


def test_tags_are_stripped_and_empty_pieces_ignored(tmp_path: Path):
    add_images(tmp_path / "images" / "1_x", ["smile ,  red hat,\tblue eyes , ,smile,\u3000", "smile\n"])
    counts = count_tags(plan_of(tmp_path / "images"))
    assert counts["1_x"] == {"smile": 3, "red hat": 1, "blue eyes": 1}


def test_non_ascii_tags_are_read_and_written_as_utf8(tmp_path: Path):
    # the first caption file starts with a byte-order mark, as Windows Notepad writes them
    add_images(tmp_path / "images" / "1_x", ["\ufeffcafé, 猫耳, ñandú", "猫耳"])
    path = write_tag_list(plan_of(tmp_path / "images"), tmp_path / "mylora.txt", lora_name="mylora")
    assert path.read_bytes().decode("utf-8").splitlines()[1:] == ["[2] 猫耳", "[1] café", "[1] ñandú"]


def test_an_existing_file_is_never_overwritten(two_folders: DatasetPlan, tmp_path: Path):
    mine = tmp_path / "mylora.txt"
    mine.write_text("my own notes", encoding="utf-8")
    (tmp_path / "mylora-2.txt").write_text("more notes", encoding="utf-8")
    written = write_tag_list(two_folders, mine, lora_name="mylora")
    assert written == tmp_path / "mylora-3.txt" and written.read_text(encoding="utf-8").startswith(HEADER)
    assert mine.read_text(encoding="utf-8") == "my own notes"
    assert (tmp_path / "mylora-2.txt").read_text(encoding="utf-8") == "more notes"
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file of the atomic write is gone
