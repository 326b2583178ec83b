"""save_vgg_feature.py when things around the extraction go wrong: an output it cannot write, two runs into one
output, SIGTERM and Ctrl-C, and a run in which most images fail. Images drawn with Pillow, a random-weight VGG16."""
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import types

import pytest
import torch

import save_vgg_feature
import vgg
from conftest import ROOT, data_folder, sigint_default, torch_checkpoint


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


# ----------------------------------------------------------------------------------------------------------------
# Two runs into one output, signals, and the temporaries of a killed run

def start_extraction(data_dir, weights, prelude, *flags):
    """save_vgg_feature.py in a child process, after the Python code `prelude` (a patch that makes it pause or
    signal itself at one point); its stdout and stderr are read with communicate()."""
    run = f"sys.exit(save_vgg_feature.main({cli_args(data_dir, weights, *flags)!r}))"
    code = "\n".join([textwrap.dedent(prelude), "import sys", "import save_vgg_feature", run])
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_default)


def wait_for(path, process, timeout=120):
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert path.exists(), process.communicate(timeout=60) if process.poll() is not None else f"no {path}"


def assert_stopped_quietly(process, code, name):
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert err.splitlines()[-1] == f"interrupted ({name})" and "Traceback" not in err, err
    assert "\r" not in err  # no progress bar in a log that is not a terminal
    return out


def test_a_second_extraction_into_the_same_output_is_refused(tmp_path, weights, capsys):
    data_dir = data_folder(tmp_path)
    started = tmp_path / "started"
    first = start_extraction(data_dir, weights, f"""
        import pathlib, time, vgg
        def forward(self, images):  # the first run is busy extracting
            pathlib.Path({str(started)!r}).touch()
            time.sleep(120)
        vgg.VGG16Features.forward = forward
        """)
    wait_for(started, first)
    try:
        assert extract(data_dir, weights) == 2
    finally:
        first.send_signal(signal.SIGTERM)
    err = capsys.readouterr().err
    output = data_dir / "img_vgg_features.pt"
    assert err.startswith(f"error: {output} is in use by another process (process {first.pid}, lock file {output}.lock)")
    assert_stopped_quietly(first, 143, "SIGTERM")
    assert not output.exists() and leftovers(data_dir) == []
    assert extract(data_dir, weights) == 0 and output.exists()  # the lock went with the first run


def test_sigterm_during_the_final_save_leaves_no_temporary_file(tmp_path, weights):
    data_dir = data_folder(tmp_path)
    process = start_extraction(data_dir, weights, """
        import os, signal, time, torch
        def save(obj, f, *args, **kwargs):
            f.write(b"x" * 1000000)  # half a feature file written
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        torch.save = save
        """)
    assert_stopped_quietly(process, 143, "SIGTERM")
    assert leftovers(data_dir) == [] and not (data_dir / "img_vgg_features.pt").exists()


def test_ctrl_c_during_extraction_is_one_line(tmp_path, weights):
    data_dir = data_folder(tmp_path)
    process = start_extraction(data_dir, weights, """
        import os, signal, time, vgg
        def forward(self, images):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
        vgg.VGG16Features.forward = forward
        """, "--workers", "2")
    assert_stopped_quietly(process, 130, "SIGINT")
    assert leftovers(data_dir) == []


def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path, weights, caplog):
    data_dir = data_folder(tmp_path)
    stale = data_dir / ".img_vgg_features.pt.k1ll3d_x.tmp"  # what SIGKILL leaves from atomic_path's mkstemp
    stale.write_bytes(b"x" * 1000)
    other = data_dir / ".dev.a1b2c3d4.tmp"  # another file's temporary: not ours to remove
    other.write_bytes(b"y")
    assert extract(data_dir, weights) == 0
    assert not stale.exists() and other.exists()
    assert f"removed {stale}, left by an interrupted run" in caplog.text


# ----------------------------------------------------------------------------------------------------------------
# A run in which most images fail

def test_most_images_failing_is_an_error_with_the_likely_cause(tmp_path, weights, capsys):
    data_dir = data_folder(tmp_path, good=("a",), bad=("bad",), missing=("gone", "lost"))
    output, report = data_dir / "img_vgg_features.pt", data_dir / "img_vgg_features.pt.failures.tsv"
    torch.save({"earlier": torch.zeros(1)}, output)
    assert extract(data_dir, weights) == 2
    err = capsys.readouterr().err
    img_dir = data_dir / "ner_img"
    assert err.startswith(f"error: only 1 of 4 images could be extracted from {img_dir} (3 failed: 2 missing, "
                          f"1 unreadable)")
    assert "--img_dir" in err and f"{img_dir} holds 2 files: a.jpg, bad.jpg" in err
    assert "gone: missing: no gone{.jpg,.png,.jpeg}" in err and f"listed in {report}" in err
    assert sorted(line.split("\t")[0] for line in report.read_text().splitlines()) == ["bad", "gone", "lost"]
    assert torch.load(output, weights_only=True).keys() == {"earlier"}  # the earlier file is kept
    half = data_folder(tmp_path / "half", good=("a", "b"), bad=("bad",), missing=("gone",))
    assert extract(half, weights) == 0  # half failed: written, the failures reported


def test_no_image_ids_at_all_is_an_error(tmp_path, weights, capsys, no_extraction):
    data_dir = data_folder(tmp_path)
    assert extract(data_dir, weights, "--files", ",") == 2  # the last --files wins
    assert capsys.readouterr().err == "error: no image ids to extract: --files ',' names no data file with tweets.\n"
