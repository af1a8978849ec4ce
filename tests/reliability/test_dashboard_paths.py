"""Paths typed into the dashboard: must exist, be a readable directory of the expected layout; never executed;
nothing outside the chosen directory is read. Bad input gives a ConfigError (shown by the page), never a crash."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.launch_form import build_config, check_dataset_dir
from em3.config import ConfigError
from em3.data.load import load_dataset
from tests.reliability.fs_audit import FsAudit
from tests.reliability.test_fuzz_loaders import write_files, write_movielens

pytestmark = pytest.mark.reliability


def _refused(path: str, kind: str, match: str) -> None:
    with FsAudit() as audit:
        with pytest.raises(ConfigError, match=match):
            build_config(kind, "em3", ranker="din", knobs={}, data_dir=path)
    assert audit.writes == []


def test_missing_file_empty_and_wrong_layout_are_refused_naming_the_path(tmp_path: Path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    write_files(tmp_path / "files_ds")
    _refused("", "files", r"data\.data_dir: give the dataset directory")
    _refused(str(tmp_path / "nope"), "files", rf"{tmp_path / 'nope'} does not exist")
    _refused(str(tmp_path / "a_file"), "movielens", r"is not a directory")
    _refused(str(tmp_path / "empty"), "files", r"lacks items\.csv or items\.parquet, interactions")
    _refused(str(tmp_path / "files_ds"), "movielens", r"lacks ml-100k/u\.data \(expected layout of a movielens")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_directory_is_refused(tmp_path: Path):
    d = tmp_path / "locked"
    write_files(d)
    d.chmod(0)
    try:
        _refused(str(d), "files", r"is not readable")
    finally:
        d.chmod(0o755)


@pytest.mark.parametrize("path", ["x" * 5000, "/tmp/" + "y" * 300, "a\x00b", "$(touch {marker})",
                                  "`touch {marker}`", "; touch {marker}", "{marker}|cat", "~nosuchuser/x"])
def test_hostile_or_impossible_paths_are_config_errors_and_never_executed(tmp_path: Path, path: str):
    marker = tmp_path / "pwned"
    _refused(path.format(marker=marker), "files", r"^data\.data_dir: ")
    assert not marker.exists()


@settings(max_examples=60, deadline=None)
@given(path=st.text(max_size=300))
def test_any_typed_text_is_a_config_error_or_a_valid_directory(path: str):
    try:
        check_dataset_dir(path, "files")
    except ConfigError as e:
        assert str(e).startswith("data.data_dir: ")


def test_a_valid_directory_is_accepted_and_loading_reads_only_inside_it(tmp_path: Path):
    ds = tmp_path / "ml"
    write_movielens(ds)
    (tmp_path / "outside.csv").write_text("movie_id\n1\n")
    cfg = build_config("movielens", "em3", ranker="din", knobs={}, data_dir=f"{ds}/../ml/")
    assert cfg.data.data_dir == str(ds.resolve()) and cfg.data.source == "movielens-100k"
    with FsAudit() as audit:
        raw = load_dataset(cfg.data)
        [raw.load_image(int(i)) for i in raw.items["item_id"]]
    assert audit.reads_outside(ds) == [] and audit.writes == []
    assert len(raw.items) == 6
