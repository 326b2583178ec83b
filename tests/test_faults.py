"""Faults: unseen tags, entity-free training data, crashes mid-write, a real Ctrl-C during training."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import utils
from conftest import ROOT, SMALL_MODEL, make_tweets, run_main, write_conll


def test_dev_tag_unseen_in_training_is_still_counted(tmp_path, tiny_data, caplog):
    data_dir, splits = tiny_data
    dev = splits["dev"] + [("misc_1", [("Olympics", "B-MISC"), ("Games", "I-MISC"), ("go", "O")])]
    write_conll(data_dir / "dev", dev)
    torch.save({i: torch.rand(49, 512) for tweets in (splits["train"], dev, splits["test"]) for i, _ in tweets},
               data_dir / "img_vgg_features.pt")
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 0
    assert "tags never seen in training: {'B-MISC': 1, 'I-MISC': 1}" in caplog.text
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["dev"]["per_type"]["MISC"]["support"] == 1 and metrics["dev"]["per_type"]["MISC"]["recall"] == 0
    assert metrics["dev"]["tweets"] == len(dev)


def test_training_file_without_entities_warns_and_runs(tmp_path, tiny_data, caplog):
    data_dir, _ = tiny_data
    write_conll(data_dir / "train", [(i, [(tok, "O") for tok, _ in toks]) for i, toks in make_tweets(40, 1)])
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 0
    assert "has no entities: the model can only learn to predict O" in caplog.text
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["gold_entities"] > 0 and metrics["test"]["recall"] == 0


def test_crash_mid_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    utils.atomic_torch_save({"version": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError, match="crash while writing"):
        utils.atomic_torch_save({"weights": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"version": 1}
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left either


def test_ctrl_c_during_training_keeps_best_checkpoint(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    model_dir = tmp_path / "model"
    flags = SMALL_MODEL + ["--num_train_epochs", "100000"]  # the last value of a flag wins
    command = [sys.executable, os.path.join(ROOT, "main.py"), "--do_train", "--do_eval", "--data_dir", str(data_dir),
               "--model_dir", str(model_dir), *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (model_dir / "model.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # well inside training
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "Interrupted (SIGINT) at step" in output and "is intact at" in output
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    assert saved["epoch"] >= 1 and saved["dev_f1"] >= 0
    assert json.loads((model_dir / "metrics.json").read_text())["interrupted"] is True
    assert not [name for name in os.listdir(model_dir) if name.endswith(".tmp")]
