"""The queue: sorted order, isolation, complete/ and failed/ with the reason beside, never overwriting."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from sd_scripts.errors import UserFacingError
from wizard.config import TrainConfig
from wizard.queue import run_queue


@dataclass
class Result:
    ok: bool
    message: str = ""
    lora_path: str | None = None


def write_settings(folder: Path, name: str, **values) -> None:
    (folder / name).write_text(json.dumps({"config_version": 1, **values}), encoding="utf-8")


@pytest.fixture
def queue_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "queue"
    folder.mkdir()
    write_settings(folder, "b_good.json", net_dim=8)
    write_settings(folder, "a_good.json", net_dim=4)
    (folder / "c_broken.json").write_text("{not json", encoding="utf-8")
    write_settings(folder, "d_fails.json", net_dim=99)
    write_settings(folder, "e_crashes.json", net_dim=77)
    (folder / "notes.txt").write_text("not a queue item", encoding="utf-8")
    return folder


def fake_run(config: TrainConfig, *, position: tuple[int, int]) -> Result:
    if config.get("net_dim") == 99:
        return Result(False, "The training ran out of GPU memory.")
    if config.get("net_dim") == 77:
        raise RuntimeError("boom")
    return Result(True, lora_path=f"/loras/dim{config.get('net_dim')}.safetensors")


def test_the_queue_runs_every_json_in_order_and_sorts_the_results(queue_folder: Path):
    seen: list[int] = []
    positions: list[tuple[int, int]] = []
    lines: list[str] = []

    def run_one(config: TrainConfig, *, position: tuple[int, int]) -> Result:
        seen.append(config.get("net_dim"))
        positions.append(position)
        return fake_run(config, position=position)

    summary = run_queue(queue_folder, run_one, report=lines.append)
    assert seen == [4, 8, 99, 77]  # sorted names; the broken file never reached run_one
    assert positions == [(1, 5), (2, 5), (4, 5), (5, 5)]  # "run i of n" counts every file, the broken one too
    assert [entry.name for entry in summary.entries] == ["a_good.json", "b_good.json", "c_broken.json",
                                                         "d_fails.json", "e_crashes.json"]
    assert sorted(p.name for p in (queue_folder / "complete").iterdir()) == ["a_good.json", "b_good.json"]
    assert sorted(p.name for p in (queue_folder / "failed").iterdir()) == [
        "c_broken.error.txt", "c_broken.json", "d_fails.error.txt", "d_fails.json", "e_crashes.error.txt",
        "e_crashes.json"]
    assert (queue_folder / "notes.txt").exists() and not list(queue_folder.glob("*.json"))
    assert "c_broken.json" in (queue_folder / "failed" / "c_broken.error.txt").read_text(encoding="utf-8")
    assert (queue_folder / "failed" / "d_fails.error.txt").read_text(encoding="utf-8") == (
        "The training ran out of GPU memory.\n")
    assert "RuntimeError: boom" in (queue_folder / "failed" / "e_crashes.error.txt").read_text(encoding="utf-8")

    text = summary.text()
    assert text.splitlines()[0] == "Queue finished: 2 of 5 trainings worked, 3 failed."
    assert "  ok      a_good.json" in text and "  failed  d_fails.json: The training ran out of GPU memory." in text
    assert lines[-1] == text and lines[0] == "[1/5] a_good.json: starting."


def test_each_run_gets_a_fresh_config(tmp_path: Path):
    write_settings(tmp_path, "1.json", net_dim=8, v2=True)
    write_settings(tmp_path, "2.json", net_dim=4)
    configs: list[TrainConfig] = []
    run_queue(tmp_path, lambda config, position: configs.append(config) or Result(True), report=lambda line: None)
    assert configs[0] is not configs[1]
    assert configs[1].get("v2") is False and configs[1].origin("v2") == "default"


def test_finished_files_never_overwrite_earlier_ones(tmp_path: Path):
    (tmp_path / "complete").mkdir()
    (tmp_path / "complete" / "run.json").write_text("earlier", encoding="utf-8")
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "bad.json").write_text("earlier", encoding="utf-8")
    (tmp_path / "failed" / "bad.error.txt").write_text("earlier", encoding="utf-8")
    write_settings(tmp_path, "run.json")
    write_settings(tmp_path, "bad.json")

    summary = run_queue(tmp_path, lambda config, position: Result(True), report=lambda line: None,
                        load=lambda path: _fail_on_bad(path))
    assert (tmp_path / "complete" / "run.json").read_text(encoding="utf-8") == "earlier"
    assert (tmp_path / "complete" / "run-2.json").exists()
    assert (tmp_path / "failed" / "bad.error.txt").read_text(encoding="utf-8") == "earlier"
    assert (tmp_path / "failed" / "bad-2.json").exists()
    assert "named bad" in (tmp_path / "failed" / "bad-2.error.txt").read_text(encoding="utf-8")
    assert [entry.ok for entry in summary.entries] == [False, True]


def _fail_on_bad(path: Path) -> TrainConfig:
    if path.stem == "bad":
        raise UserFacingError("The settings file named bad is not usable; save it again.")
    return TrainConfig(cuda=False)


def test_a_missing_queue_folder_is_one_sentence(tmp_path: Path):
    with pytest.raises(UserFacingError, match="does not exist"):
        run_queue(tmp_path / "nowhere", fake_run)


def test_an_empty_queue_says_so(tmp_path: Path):
    summary = run_queue(tmp_path, fake_run, report=lambda line: None)
    assert summary.entries == [] and "has no .json files" in summary.text()
