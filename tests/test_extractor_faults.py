"""save_vgg_feature.py when things around the extraction go wrong: an output it cannot write. Images drawn with
Pillow, a random-weight VGG16."""
import errno
import os
import shutil
import tempfile
import types

import pytest
import torch

import save_vgg_feature
import vgg
from conftest import data_folder, torch_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return torch_checkpoint(tmp_path_factory.mktemp("weights") / "vgg16.pth")


def cli_args(data_dir, weights, *flags):
    return ["--data_dir", str(data_dir), "--files", "train", "--workers", "0", "--vgg_weights", weights, *flags]


def extract(data_dir, weights, *flags):
    return save_vgg_feature.main(cli_args(data_dir, weights, *flags))


@pytest.fixture
def no_extraction(monkeypatch):
    """The test fails if an image is extracted: the output must be checked before the first one."""
    monkeypatch.setattr(vgg, "extract", lambda *args, **kwargs: pytest.fail("images extracted before the check"))


def leftovers(folder):
    """Temporary and lock files left in `folder`."""
    return sorted(name for name in os.listdir(folder) if name.endswith((".tmp", ".lock")))


# ----------------------------------------------------------------------------------------------------------------
# An output that cannot be written: refused before the first image, with advice naming the flag

@pytest.mark.parametrize("flag", ["--output", "--report"])
def test_output_under_a_file_is_refused_before_the_first_image(tmp_path, weights, capsys, no_extraction, flag):
    data_dir = data_folder(tmp_path)
    (tmp_path / "plain").write_text("a file where a folder should be")
    target = tmp_path / "plain" / "sub" / "out"
    assert extract(data_dir, weights, flag, str(target)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {target}: could not be written ({tmp_path / 'plain'} is a file, not a folder)")
    assert f"(another {flag})" in err and "--model_dir" not in err and "Traceback" not in err


def test_output_that_is_a_folder_is_refused(tmp_path, weights, capsys, no_extraction):
    data_dir = data_folder(tmp_path)
    assert extract(data_dir, weights, "--output", str(tmp_path)) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: is a folder; --output names the file to write")


def test_folder_without_write_permission_is_refused(tmp_path, weights, capsys, monkeypatch, no_extraction):
    def refused(*args, **kwargs):  # what a read-only folder gives a non-root user (root may write anywhere)
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    data_dir = data_folder(tmp_path)
    assert extract(data_dir, weights) == 2
    err = capsys.readouterr().err
    assert f"{data_dir / 'img_vgg_features.pt'}: could not be written (Permission denied)" in err
    assert "(another --output)" in err


def test_disk_without_room_for_the_features_is_refused(tmp_path, weights, capsys, monkeypatch, no_extraction):
    data_dir = data_folder(tmp_path)  # 4 ids: 4 x 49 x 512 x 4 bytes = 0.4 MB of float32 features
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=10**9, free=1000))
    assert extract(data_dir, weights) == 2
    err = capsys.readouterr().err
    assert "needs about 0.4 MB for the features of 4 images (float32)" in err and "0.0 MB free" in err and "--output" in err


def test_full_disk_during_the_final_save_is_one_error_line(tmp_path, weights, capsys, monkeypatch):
    def no_space(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", no_space)
    data_dir = data_folder(tmp_path)
    assert extract(data_dir, weights) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {data_dir / 'img_vgg_features.pt'}: could not be written (the disk is full). Free some "
                   f"space, or write elsewhere (another --output).\n")
    assert leftovers(data_dir) == []

