"""Faults: unseen tags, entity-free or token-free data, divergent training, crashes mid-write, two runs in one
folder, file permissions, and a real Ctrl-C or SIGTERM during training."""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import warnings

import pytest
import torch

import main
import utils
from conftest import ROOT, SMALL_MODEL, make_tweets, run_main, sigint_default, write_conll


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
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=sigint_default)
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


def test_run_script_keeps_the_exit_code_and_freezes_what_the_collector_would_scan():
    """utils.run_script (how main.py and save_vgg_feature.py run): the imports are frozen before main() runs, what
    main() made is collected (its cycles' finalizers run) and then frozen before the exit, and main()'s code reaches
    the shell."""
    script = ("import atexit, gc, sys; import torch, utils\n"
              "class Cycle:\n"
              "    def __init__(self): self.me = self\n"
              "    def __del__(self): print('cycle finalized')\n"
              "atexit.register(lambda: print('at exit', gc.get_freeze_count()))\n"
              "made = []\n"
              "def main():\n"
              "    print('in main', gc.get_freeze_count())\n"
              "    made.extend([] for _ in range(50_000))\n"
              "    Cycle()\n"  # garbage only the cycle collector frees
              "    return 7\n"
              "utils.run_script(main)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 7, done.stderr
    lines = done.stdout.splitlines()
    assert "cycle finalized" in lines  # the cycles main() left are collected before the second freeze
    in_main, at_exit = (int(line.split()[-1]) for line in lines if line != "cycle finalized")
    assert in_main > 100_000  # torch alone leaves over a hundred thousand tracked objects
    assert at_exit > in_main + 49_000  # and main()'s 50,000 lists are frozen too (a few short-lived ones are gone)


def strict_json(path):
    """The JSON at `path`, refusing NaN and infinities (json.dumps writes them by default; strict parsers do not)."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def all_finite(state_dict):
    return all(torch.isfinite(value).all() for value in state_dict.values() if value.is_floating_point())


def start_training(data_dir, model_dir, *extra):
    """main.py as a child process, training for (nearly) ever; its output is read with communicate()."""
    command = [sys.executable, os.path.join(ROOT, "main.py"), "--do_train", "--do_eval", "--data_dir", str(data_dir),
               "--model_dir", str(model_dir), *SMALL_MODEL, "--num_train_epochs", "100000", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_default)


def wait_for_file(path, process, timeout=120):
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert path.exists(), process.communicate(timeout=60)[0] if process.poll() is not None else f"no {path}"


def test_cr_only_training_file_trains_on_its_tweets(tmp_path, tiny_data):
    data_dir, splits = tiny_data
    text = (data_dir / "train").read_text(encoding="utf-8")
    (data_dir / "train").write_bytes(text.replace("\n", "\r").encode("utf-8"))  # old Mac line ends only
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["data"]["train"]["tweets"] == 40
    assert config["data"]["train"]["tokens"] == sum(len(tokens) for _, tokens in splits["train"])
    history = json.loads((tmp_path / "model" / "metrics.json").read_text())["history"]
    assert history[-1]["step"] == 3 and history[-1]["train_loss"] > 0  # 40 tweets in batches of 16


def test_training_file_without_tokens_is_refused(tmp_path, tiny_data, capsys):
    data_dir, splits = tiny_data
    write_conll(data_dir / "train", [(img_id, []) for img_id, _ in splits["train"]])  # IMGID lines only
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 2
    err = capsys.readouterr().err
    assert "nothing to train on" in err and "Traceback" not in err
    assert not (tmp_path / "model" / "model.pt").exists() and not (tmp_path / "model" / "metrics.json").exists()


def test_dev_without_entities_keeps_the_latest_checkpoint_quietly(tmp_path, tiny_data, caplog):
    data_dir, splits = tiny_data
    write_conll(data_dir / "dev", [(img_id, [(tok, "O") for tok, _ in tokens]) for img_id, tokens in splits["dev"]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "3") == 0
    runtime_warnings = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert runtime_warnings == []  # seqeval on no entity at all averages empty arrays: "Mean of empty slice"
    assert "has no gold entity" in caplog.text and "latest evaluation is kept" in caplog.text
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert saved["epoch"] == 3  # F1 is 0 after every epoch; the latest model is kept, not the first
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["best_epoch"] == 3 and metrics["dev"]["gold_entities"] == 0 and metrics["dev"]["f1"] == 0


def test_huge_learning_rate_stops_with_a_clear_message(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--learning_rate", "1e30") == 2
    err = capsys.readouterr().err
    stop = re.search(r"the training loss is nan at step (\d+) \(epoch (\d+)\): training diverged\. Lower "
                     r"--learning_rate \(now 1e\+30\)", err)
    assert stop and len(err.strip().splitlines()) == 1, err
    model_dir = tmp_path / "model"
    if (model_dir / "model.pt").exists():  # (at seed 7 it diverges at step 2, before the first evaluation)
        saved = torch.load(model_dir / "model.pt", weights_only=True)
        assert saved["epoch"] < int(stop.group(2)) and all_finite(saved["model"])
    if (model_dir / "metrics.json").exists():
        strict_json(model_dir / "metrics.json")


def test_weights_gone_non_finite_are_never_saved(tmp_path, tiny_data, capsys):
    """At 2e38 one Adam step overflows some float32 weights while that step's loss was finite; one step per epoch
    (a batch larger than the data) puts an evaluation, and a checkpoint, right after it."""
    data_dir, _ = tiny_data
    code = run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--learning_rate", "2e38", "--train_batch_size",
                    "64")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the weights are no longer finite after step 1 (epoch 1)" in err and "Lower --learning_rate" in err
    assert "no checkpoint had been saved yet" in err
    model_dir = tmp_path / "model"
    assert not (model_dir / "model.pt").exists()
    if (model_dir / "metrics.json").exists():
        strict_json(model_dir / "metrics.json")


def test_second_run_in_a_locked_folder_is_refused_until_its_owner_dies(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    model_dir = tmp_path / "model"
    holder_code = ("import sys, time; sys.path.insert(0, sys.argv[1]); import utils\n"
                   "with utils.folder_lock(sys.argv[2]):\n    print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", holder_code, ROOT, str(model_dir)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 2
        err = capsys.readouterr().err
        assert f"process {holder.pid}, lock file {model_dir / '.lock'}" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert os.listdir(model_dir) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the lock file keeps the dead owner's pid
        holder.wait()
    assert (model_dir / ".lock").read_text().strip() == str(holder.pid)
    assert run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1") == 0  # the OS released the lock
    assert (model_dir / "model.pt").exists()


def test_output_files_follow_the_umask(tmp_path, tiny_data):
    data_dir, splits = tiny_data
    model_dir = tmp_path / "model"
    previous = os.umask(0o022)
    try:
        assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "1", "--do_predict",
                        "--pred_file", str(data_dir / "test")) == 0
        os.umask(0o027)  # a stricter one, set after the program was imported, is honoured too
        assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(data_dir / "test"), "--pred_output",
                        str(model_dir / "private.predicted")) == 0
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE(os.stat(model_dir / name).st_mode) for name in os.listdir(model_dir)}
    expected = ["model.pt", "metrics.json", "config.json", "dev_predictions.txt", "test_predictions.txt",
                "training_curve.png", "test.predicted", "test.predicted.metrics.json"]
    assert {name: modes[name] for name in expected} == {name: 0o644 for name in expected}
    assert modes["private.predicted"] == 0o640 and modes["private.predicted.metrics.json"] == 0o640


def test_sigterm_during_training_keeps_the_checkpoint_and_a_second_run_is_refused(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    model_dir = tmp_path / "model"
    process = start_training(data_dir, model_dir, "--seed", "11")
    try:
        wait_for_file(model_dir / "model.pt", process)
        second = main.main(["--do_train", "--data_dir", str(data_dir), "--model_dir", str(model_dir), *SMALL_MODEL,
                            "--seed", "12"])
        err = capsys.readouterr().err
        assert second == 2 and f"process {process.pid}, lock file {model_dir / '.lock'}" in err, err
        time.sleep(0.3)  # well inside training
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, output
    assert "Interrupted (SIGTERM) at step" in output and "is intact at" in output and "Traceback" not in output
    metrics = strict_json(model_dir / "metrics.json")
    assert metrics["interrupted"] is True and metrics["stopped_by"] == "SIGTERM"
    assert json.loads((model_dir / "config.json").read_text())["seed"] == 11  # the first run's own files
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    assert saved["epoch"] >= 1 and all_finite(saved["model"])
    assert not [name for name in os.listdir(model_dir) if name.endswith(".tmp")]


def test_the_suite_runs_one_thread_per_process():
    """On a busy machine, torch's threads that wait for a core spin: the suite (and every program it starts, which
    inherits the environment) uses one thread per process, without the user setting anything."""
    assert torch.get_num_threads() == 1
    child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "1"
