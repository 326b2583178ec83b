"""Where two features meet: a run folder read by a later command, several seeds and their locks, a checkpoint and
the config.json beside it, and files that exist but are not regular files."""
import json
import os
import signal

import pytest
import torch

import images
import main
import run_folder
import trainer
import utils
from conftest import SMALL_MODEL, make_tweets, run_main, write_conll, write_features


def run_cli(capsys, argv):
    """main.main(argv) as the shell sees it: (exit code, stderr)."""
    try:
        code = main.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def twitter2017_like(folder):
    """A small data set under Twitter-2017's file names (train.txt, valid.txt, test.txt) with features."""
    folder.mkdir()
    splits = {"train.txt": make_tweets(30, 11), "valid.txt": make_tweets(9, 12), "test.txt": make_tweets(7, 13)}
    for name, tweets in splits.items():
        write_conll(folder / name, tweets)
    write_features(folder / "img_vgg_features.pt", [i for tweets in splits.values() for i, _ in tweets])
    return splits


# ----------------------------------------------------------------------------------------------------------------
# A run folder read later (issue: evaluating later scored Twitter-2015 and overwrote the run's metrics)

def test_eval_later_scores_the_data_set_the_run_was_trained_on(tmp_path, tiny_data, capsys):
    splits = twitter2017_like(tmp_path / "d2017")
    model_dir = tmp_path / "model"
    assert main.main(["--dataset", "twitter2017", "--data_dir", str(tmp_path / "d2017"), "--model_dir",
                      str(model_dir), *SMALL_MODEL, "--do_train", "--do_eval"]) == 0
    trained = json.loads((model_dir / "metrics.json").read_text())
    assert main.main(["--do_eval", "--model_dir", str(model_dir), "--no_progress", "--offline"]) == 0
    again = json.loads((model_dir / "metrics.json").read_text())
    assert again["test"]["tweets"] == len(splits["test.txt"]) == trained["test"]["tweets"]
    assert again["test"]["f1"] == trained["test"]["f1"] and again["history"] == trained["history"]
    assert json.loads((model_dir / "config.json").read_text())["dataset"] == "twitter2017"


def test_eval_on_other_data_than_the_run_s_is_refused_and_leaves_its_metrics(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data  # Twitter-2015's file names
    twitter2017_like(tmp_path / "d2017")
    model_dir = tmp_path / "model"
    assert main.main(["--dataset", "twitter2017", "--data_dir", str(tmp_path / "d2017"), "--model_dir",
                      str(model_dir), *SMALL_MODEL, "--do_train", "--do_eval"]) == 0
    before = (model_dir / "metrics.json").read_bytes()
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(model_dir), "--dataset", "twitter2015",
                                 "--data_dir", str(data_dir), "--offline"])
    assert code == 2 and "--dataset twitter2015 (the run: twitter2017)" in err and "--do_predict --pred_file" in err
    assert (model_dir / "metrics.json").read_bytes() == before
    # the same file names in another folder that holds other tweets: refused by their counts
    other = tmp_path / "other"
    twitter2017_like(other)
    write_conll(other / "test.txt", make_tweets(3, 99))
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(model_dir), "--data_dir", str(other), "--offline"])
    assert code == 2 and "is not the file the run was trained and scored with: it holds 3 tweets" in err
    assert (model_dir / "metrics.json").read_bytes() == before


def test_eval_of_a_folder_that_does_not_exist_creates_nothing(tmp_path, capsys):
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(tmp_path / "nowhere"), "--offline"])
    assert code == 2 and "nowhere does not exist" in err
    assert not (tmp_path / "nowhere").exists()


# ----------------------------------------------------------------------------------------------------------------
# Locks: every folder a run writes, and reading without write access

def test_seeds_refuse_a_seed_folder_held_by_another_run_before_training_any(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    model_dir = tmp_path / "model"
    with utils.folder_lock(model_dir / "seed_8"):  # another training in R/seed_8
        code = run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--seeds", "7,8", "--num_train_epochs", "1")
    err = capsys.readouterr().err
    assert code == 2 and f"{model_dir / 'seed_8'} is in use by another run" in err
    assert not (model_dir / "seed_7" / "model.pt").exists() and not (model_dir / "results.md").exists()


def test_predict_reads_under_a_shared_lock(tmp_path, tiny_data, capsys):
    """Tagging is refused while a training holds the folder (its checkpoint may be replaced); two taggers at once
    are fine."""
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0
    model_dir = tmp_path / "model"
    with utils.folder_lock(model_dir):
        assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(data_dir / "test")) == 2
    assert "is in use by another run" in capsys.readouterr().err
    with utils.folder_lock(model_dir, shared=True):
        assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(data_dir / "test")) == 0


def pretend_read_only(monkeypatch, folder):
    """As for a colleague's run folder without write permission (the tests run as root, which may write anywhere):
    creating a file in it fails, and os.access says no."""
    folder = os.fspath(folder)
    real_open, real_access = open, os.access

    def guarded_open(path, mode="r", *args, **kwargs):
        if os.path.dirname(os.path.abspath(os.fspath(path))) == folder and not os.path.exists(path) and mode != "r":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != folder and real_access(path, mode))


def test_a_read_only_run_is_summarised_and_its_eval_refused_before_any_work(tmp_path, tiny_data, monkeypatch,
                                                                             capsys):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "1") == 0
    run = tmp_path / "model"
    (run / ".lock").unlink()  # a run copied from a colleague: no lock file
    before = (run / "metrics.json").read_bytes()
    pretend_read_only(monkeypatch, run)
    assert main.main(["--summarise", str(run), "--model_dir", str(tmp_path / "summary")]) == 0
    assert (tmp_path / "summary" / "results.md").exists() and not (run / ".lock").exists()
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(run), "--offline"])
    assert code == 2 and f"{run} is not writable" in err and "cp -r" in err
    assert (run / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["test"].update(f=float("nan")), "NaN is not a number JSON allows"),
    (lambda m: m["test"].update(f1="0.5"), "'test.f1' is '0.5', not a score between 0 and 1"),
    (lambda m: m["test"]["per_type"]["PER"].pop("f1"), "'test.per_type.PER.f1' is None"),
    (lambda m: m["dev"].pop("per_type"), "'dev.per_type' is missing"),
])
def test_summarise_checks_every_score_it_reads(tmp_path, tiny_data, capsys, edit, message):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "1") == 0
    path = tmp_path / "model" / "metrics.json"
    metrics = json.loads(path.read_text())
    edit(metrics)
    path.write_text(json.dumps(metrics).replace('"f": NaN', '"f1": NaN'))
    code, err = run_cli(capsys, ["--summarise", str(tmp_path / "model"), "--model_dir", str(tmp_path / "s")])
    assert code == 2 and str(path) in err and message in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# A checkpoint and what it claims

def test_a_vocabulary_that_does_not_fit_the_weights_is_refused(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0
    path = tmp_path / "model" / "model.pt"
    saved = torch.load(path, weights_only=True)
    saved["vocab"]["tags"] = saved["vocab"]["tags"][:-1]  # a cut tag list
    torch.save(saved, path)
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(tmp_path / "model"), "--offline"])
    assert code == 2 and "its vocabulary does not fit its weights" in err and "tags for weights sized for" in err


def test_a_checkpoint_that_contradicts_its_config_json_is_refused(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1", "--model_dir",
                    str(tmp_path / "paper")) == 0
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1", "--architecture", "authors") == 0
    os.replace(tmp_path / "paper" / "model.pt", tmp_path / "model" / "model.pt")  # the paper's weights, authors' run
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(tmp_path / "model"), "--offline"])
    assert code == 2 and "does not belong to" in err and "architecture: model.pt 'paper' vs config.json 'authors'" in err


def test_tagging_raw_tweets_with_images_names_a_missing_config_json(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0
    (tmp_path / "model" / "config.json").unlink()
    code, err = run_cli(capsys, ["--do_predict", "--model_dir", str(tmp_path / "model"), "--text", "Messi in Paris",
                                 "--image", str(tmp_path / "photo.jpg"), "--offline"])
    assert code == 2 and f"{tmp_path / 'model' / 'config.json'} is missing" in err and "provenance" not in err


def test_a_sparse_feature_is_named_by_its_id(tmp_path, tiny_data, capsys):
    data_dir, splits = tiny_data
    features = torch.load(data_dir / "img_vgg_features.pt", weights_only=True)
    first = splits["train"][0][0]
    features[first] = features[first].to_sparse()
    torch.save(features, data_dir / "img_vgg_features.pt")
    assert run_main(tmp_path, data_dir, "--do_train") == 2
    err = capsys.readouterr().err
    assert f"the feature of image id {first!r} is a torch.sparse_coo tensor" in err and ".to_dense()" in err


# ----------------------------------------------------------------------------------------------------------------
# Files that exist but are not regular files: a FIFO would hang a reader forever, /dev/zero fill memory

@pytest.fixture
def no_hang():
    """Fail the test (instead of hanging the suite) if a read blocks for 20 s."""
    def give_up(signum, frame):
        raise TimeoutError("a reader blocked on something that is not a regular file")
    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("name, flags, expected", [
    ("dev", ["--do_train"], "is a FIFO (named pipe), not a data file"),
    ("img_vgg_features.pt", ["--do_train"], "is a FIFO (named pipe), not an image-feature file"),
    ("vectors.vec", ["--do_train", "--w2v_file", "vectors.vec"], "is a FIFO (named pipe), not a word-vector file"),
    ("tweets.txt", ["--do_predict", "--pred_file", "{data_dir}/tweets.txt"], "is a FIFO (named pipe), not a data "),
    ("tweets.jsonl", ["--do_predict", "--pred_file", "{data_dir}/tweets.jsonl"], "is a FIFO (named pipe), not a file"),
])
def test_a_fifo_in_place_of_a_file_is_refused_at_once(tmp_path, tiny_data, capsys, no_hang, name, flags, expected):
    data_dir, _ = tiny_data
    if "--do_predict" in flags:
        assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0
    path = data_dir / name
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    argv = ["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), "--wordvec_dir", str(data_dir),
            *SMALL_MODEL, *[flag.format(data_dir=data_dir) for flag in flags]]
    if "--w2v_file" in flags:
        argv.remove("--no_w2v")
    code, err = run_cli(capsys, argv)
    assert code == 2 and f"{path}: {expected}" in err


def test_a_fifo_checkpoint_and_a_device_image_are_named_as_such(tmp_path, tiny_data, capsys, no_hang):
    data_dir, _ = tiny_data
    os.makedirs(tmp_path / "model")
    os.mkfifo(tmp_path / "model" / "model.pt")
    with pytest.raises(trainer.CheckpointError, match="is a FIFO \\(named pipe\\), not a checkpoint file"):
        trainer.load_checkpoint(str(tmp_path / "model" / "model.pt"))
    assert utils.not_a_file("/dev/zero") == "is a character device"
    assert utils.not_a_file(tmp_path) == "is a directory" and utils.not_a_file(tmp_path / "x") == "does not exist"


def test_run_files_and_images_that_are_not_files_are_reported(tmp_path, no_hang):
    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(run_folder.DataError, match="config.json: is a FIFO"):
        run_folder.RunFolder(tmp_path).read_config()
    os.mkfifo(tmp_path / "photo.jpg")
    with pytest.raises(images.ImageError, match="photo.jpg: unreadable image: is a FIFO \\(named pipe\\), not an image"):
        images.open_image(tmp_path / "photo.jpg")


def test_tagging_reads_the_features_of_the_run_s_data_set(tmp_path, capsys):
    """--do_predict of a Twitter-2017 run, with no data flag: the run's own data folder and feature file, not
    Twitter-2015's defaults (which would give its tweets zero features, or another data set's)."""
    splits = twitter2017_like(tmp_path / "d2017")
    model_dir = tmp_path / "model"
    assert main.main(["--dataset", "twitter2017", "--data_dir", str(tmp_path / "d2017"), "--model_dir",
                      str(model_dir), *SMALL_MODEL, "--do_train", "--do_eval"]) == 0
    code, err = run_cli(capsys, ["--do_predict", "--model_dir", str(model_dir), "--pred_file",
                                 str(tmp_path / "d2017" / "test.txt"), "--offline", "--no_progress"])
    assert code == 0 and "no feature" not in err
    scored = json.loads((model_dir / "test.txt.predicted.metrics.json").read_text())
    assert scored["f1"] == json.loads((model_dir / "metrics.json").read_text())["test"]["f1"]
    assert scored["tweets"] == len(splits["test.txt"])


def test_eval_refuses_a_feature_file_or_a_text_file_replaced_since_training(tmp_path, tiny_data, capsys):
    data_dir, splits = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "1") == 0
    before = (tmp_path / "model" / "metrics.json").read_bytes()
    features = torch.load(data_dir / "img_vgg_features.pt", weights_only=True)
    torch.save({**features, "__provenance__": {"mode": "synthetic"}}, data_dir / "img_vgg_features.pt")
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(tmp_path / "model"), "--offline"])
    assert code == 2 and "not the feature file" in err and "no provenance record; this file: --preprocess synthetic" \
        in err
    torch.save(features, data_dir / "img_vgg_features.pt")  # the run's features back
    img_id, tokens = splits["test"][0]
    write_conll(data_dir / "test", [(img_id, [(tokens[0][0], "B-ORG")] + tokens[1:])] + splits["test"][1:])
    code, err = run_cli(capsys, ["--do_eval", "--model_dir", str(tmp_path / "model"), "--offline"])
    assert code == 2 and "its content changed since" in err
    assert (tmp_path / "model" / "metrics.json").read_bytes() == before
