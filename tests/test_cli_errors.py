"""Bad flags and bad files end in one line on stderr and exit code 2, never a traceback."""
import errno

import pytest
import torch

import main
from conftest import SMALL_MODEL, run_main


def run_cli(capsys, argv):
    """main.main(argv) the way the shell sees it: (exit code, stderr)."""
    try:
        code = main.main(argv)
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    return code, capsys.readouterr().err


def error_line(code, err):
    """The one error line of a refused run; argparse puts its usage lines before it."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") or ": error: " in lines[-1], err
    assert all(line.startswith(("usage: ", " ")) for line in lines[:-1]), err  # nothing else but usage
    return lines[-1]


def data_args(tmp_path, data_dir):
    return ["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), *SMALL_MODEL]


@pytest.mark.parametrize("flag", ["--data_dir", "--model_dir", "--wordvec_dir"])
def test_folder_flag_pointing_at_a_file(tmp_path, tiny_data, capsys, flag):
    data_dir, _ = tiny_data
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    argv = [*data_args(tmp_path, data_dir), flag, str(a_file), "--do_train"]
    line = error_line(*run_cli(capsys, argv))
    assert f"argument {flag}: {a_file} is a file, not a folder" in line
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.parametrize("name, what", [("dev", "a data file"), ("img_vgg_features.pt", "an image-feature file"),
                                        ("word_vector_200d.vec", "a word-vector file")])
def test_directory_where_a_file_should_be(tmp_path, tiny_data, capsys, name, what):
    """Each of these files has a public copy: a folder in its place must be reported, not downloaded over."""
    data_dir, _ = tiny_data
    wordvec_dir = tmp_path / "wordvec"
    folder = (wordvec_dir if name.endswith(".vec") else data_dir) / name
    if folder.exists():
        folder.unlink()
    folder.mkdir(parents=True)
    argv = ["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), "--wordvec_dir", str(wordvec_dir),
            *[flag for flag in SMALL_MODEL if flag != "--no_w2v"], "--do_train"]
    line = error_line(*run_cli(capsys, argv))
    assert f"error: {folder}: is a directory, not {what}" in line


def test_full_disk_while_saving_the_checkpoint(tmp_path, tiny_data, capsys, monkeypatch):
    data_dir, _ = tiny_data

    def no_space(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    line = error_line(*run_cli(capsys, [*data_args(tmp_path, data_dir), "--do_train"]))
    path = tmp_path / "model" / "model.pt"
    assert f"error: {path}: could not be written (the disk is full)" in line
    assert not path.exists() and not [p for p in (tmp_path / "model").iterdir() if p.name.endswith(".tmp")]


def test_word_vectors_with_a_non_utf8_byte(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    wordvec_dir = tmp_path / "wordvec"
    wordvec_dir.mkdir()
    vector = " ".join(["0.1"] * 8)
    (wordvec_dir / "vectors.txt").write_bytes(f"the {vector}\nparis {vector}\n".encode() + b"caf\xe9 " +
                                              vector.encode() + b"\n")
    argv = ["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), "--wordvec_dir", str(wordvec_dir),
            "--w2v_file", "vectors.txt", *[flag for flag in SMALL_MODEL if flag != "--no_w2v"], "--do_train"]
    line = error_line(*run_cli(capsys, argv))
    assert f"error: {wordvec_dir / 'vectors.txt'}:3: byte 0xe9" in line and "not UTF-8" in line


def test_corrupt_metrics_json_before_do_eval(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0
    metrics = tmp_path / "model" / "metrics.json"
    metrics.write_text('{"best_epoch": 1, "history": [')  # cut short
    line = error_line(*run_cli(capsys, [*data_args(tmp_path, data_dir), "--do_eval"]))
    assert f"error: {metrics}: cannot be read as JSON" in line and "Delete it" in line


def test_negative_seed(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    line = error_line(*run_cli(capsys, [*data_args(tmp_path, data_dir), "--do_train", "--seed", "-1"]))
    assert "argument --seed: expected an integer >= 0, got '-1'" in line
    assert not (tmp_path / "model").exists()


def test_repeated_seeds(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    line = error_line(*run_cli(capsys, [*data_args(tmp_path, data_dir), "--do_train", "--do_eval", "--seeds", "7,7"]))
    assert "argument --seeds: expected distinct comma-separated non-negative integers" in line and "'7,7'" in line
    assert not (tmp_path / "model").exists()


def test_learning_rate_beyond_float32(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    argv = [*data_args(tmp_path, data_dir), "--do_train", "--optimizer", "rmsprop", "--learning_rate", "1e39"]
    line = error_line(*run_cli(capsys, argv))
    assert "argument --learning_rate: expected a number up to 3.4e+38 (the weights are float32), got '1e39'" in line


@pytest.mark.parametrize("spelling", ["same", "dotted"])
def test_pred_output_that_is_the_pred_file(tmp_path, tiny_data, capsys, monkeypatch, spelling):
    data_dir, _ = tiny_data
    pred_file = data_dir / "test"
    before = pred_file.read_bytes()
    monkeypatch.chdir(tmp_path)
    output = str(pred_file) if spelling == "same" else f"./{data_dir.name}/../{data_dir.name}/./test"  # relative
    argv = [*data_args(tmp_path, data_dir), "--do_predict", "--pred_file", str(pred_file), "--pred_output", output]
    line = error_line(*run_cli(capsys, argv))
    assert f"argument --pred_output: {output} is the input --pred_file" in line and "overwrite" in line
    assert pred_file.read_bytes() == before
