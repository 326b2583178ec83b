"""main.py end to end on small data: outputs, checkpoints, evaluation counts, prediction, errors, interruption."""
import argparse
import json
import os
import time

import pytest
import torch
from seqeval.metrics.sequence_labeling import get_entities

import data_loader as data
import flags
import main
import model
import trainer
import utils
from conftest import SMALL_MODEL, make_tweets, run_main, write_conll


def read_predictions(path):
    """[(img_id, [fields per token])] from a CoNLL prediction file."""
    tweets = []
    for line in open(path, encoding="utf-8").read().split("\n"):
        if line.startswith("IMGID:"):
            tweets.append((line[6:], []))
        elif line:
            tweets[-1][1].append(line.split("\t"))
    return tweets


def test_train_and_eval_writes_every_output(tmp_path, tiny_data):
    data_dir, splits = tiny_data
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 0
    model_dir = tmp_path / "model"
    for name in ("model.pt", "config.json", "metrics.json", "test_predictions.txt", "dev_predictions.txt"):
        assert (model_dir / name).stat().st_size > 0, name
    saved = torch.load(model_dir / "model.pt", weights_only=True)  # plain data only: no pickled objects
    assert saved["vocab"]["tags"] == ["O", "B-LOC", "I-LOC", "B-PER"]  # the vocabulary travels in the checkpoint
    assert "Obama" not in saved["vocab"]["words"] and "obama" in saved["vocab"]["words"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["hidden_dim"] == 16 and config["kernel_lst"] == [2, 3, 4] and config["seed"] == 7
    assert config["vocab"]["includes_test_words"] is True and config["vocab"]["built_from"] == ["train", "dev", "test"]
    assert config["image_features"]["provenance"].startswith("no provenance record")

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] in (1, 2) and len(metrics["history"]) == 2
    assert metrics["peak_anonymous_memory_gb"] <= metrics["peak_memory_gb"]
    best = max(metrics["history"], key=lambda h: h["dev_f1"])
    assert metrics["dev"]["f1"] == pytest.approx(best["dev_f1"])
    for name in ("dev", "test"):  # every gold token and entity of every tweet is counted
        gold = [[tag for _, tag in tokens] for _, tokens in splits[name]]
        m = metrics[name]
        assert m["tweets"] == len(gold) and m["tokens"] == sum(map(len, gold))
        assert m["gold_entities"] == len(get_entities(gold))
        assert sum(t["support"] for t in m["per_type"].values()) == m["gold_entities"]
        assert set(m["per_type"]) == {"PER", "LOC"}


def test_long_tweets_are_predicted_in_full(tmp_path, tiny_data):
    data_dir, splits = tiny_data
    assert max(len(tokens) for _, tokens in splits["dev"]) > 8  # longer than --max_seq_len 8
    run_main(tmp_path, data_dir, "--do_train", "--do_eval")
    written = read_predictions(tmp_path / "model" / "dev_predictions.txt")
    assert [img_id for img_id, _ in written] == [img_id for img_id, _ in splits["dev"]]
    for (_, fields), (_, tokens) in zip(written, splits["dev"]):
        assert [(f[0], f[1]) for f in fields] == tokens and all(len(f) == 3 for f in fields)


def test_eval_only_reuses_vocab_and_checkpoint(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--do_eval")
    first = json.loads((tmp_path / "model" / "metrics.json").read_text())
    dev_predictions = (tmp_path / "model" / "dev_predictions.txt").read_text()
    assert run_main(tmp_path, data_dir, "--do_eval") == 0
    again = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert again["test"]["f1"] == pytest.approx(first["test"]["f1"])
    assert again["history"] == first["history"]  # eval-only keeps the training record
    # after training, dev was not evaluated again: its scores and predictions came from training's evaluation of the
    # kept checkpoint, and equal those of the checkpoint loaded and evaluated anew
    assert again["dev"] == first["dev"]
    assert (tmp_path / "model" / "dev_predictions.txt").read_text() == dev_predictions


def test_text_only_needs_no_feature_file(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    os.remove(data_dir / "img_vgg_features.pt")
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--no_img") == 0
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert saved["model_config"]["use_image"] is False
    assert not any(k.startswith("visual_attention") for k in saved["model"])


def test_missing_features_keep_tweets_in_the_data(tmp_path, tiny_data, caplog):
    data_dir, splits = tiny_data
    kept = {img_id: torch.rand(49, 512) for img_id, _ in splits["train"][:10]}
    torch.save(kept, data_dir / "img_vgg_features.pt")
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 0
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["tweets"] == len(splits["test"])
    assert "57 of 67 image ids (85.1%) have no feature" in caplog.text


def test_same_seed_same_result(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    results = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        run_main(out, data_dir, "--do_train", "--do_eval")
        results.append(json.loads((out / "model" / "metrics.json").read_text())["history"])
    assert [h["dev_f1"] for h in results[0]] == [h["dev_f1"] for h in results[1]]
    assert [h["train_loss"] for h in results[0]] == pytest.approx([h["train_loss"] for h in results[1]])


def test_predict_with_and_without_gold(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train")
    tweets = make_tweets(4, 9, max_len=30) + [("no_feature_id", [("Zyxwv", "O"), ("Paris", "B-LOC")])]
    with_tags = write_conll(tmp_path / "tagged.txt", tweets)
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(with_tags)) == 0
    out = tmp_path / "model" / "tagged.txt.predicted"
    written = read_predictions(out)
    assert [len(f) for _, f in written] == [len(tokens) for _, tokens in tweets]
    assert all(len(field) == 3 for _, fields in written for field in fields)  # token, gold, predicted
    scored = json.loads((tmp_path / "model" / "tagged.txt.predicted.metrics.json").read_text())
    assert scored["tokens"] == sum(len(t) for _, t in tweets)

    untagged = write_conll(tmp_path / "plain.txt", [(i, [(tok, None) for tok, _ in toks]) for i, toks in tweets])
    chosen = tmp_path / "elsewhere" / "tags.conll"
    assert run_main(tmp_path, data_dir, "--do_predict", "--pred_file", str(untagged), "--pred_output", str(chosen)) == 0
    assert not (tmp_path / "model" / "plain.txt.predicted").exists()
    written = read_predictions(chosen)
    assert all(len(field) == 2 for _, fields in written for field in fields)  # token, predicted
    assert not (tmp_path / "model" / "plain.txt.predicted.metrics.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints

def test_eval_without_a_trained_model_says_train_first(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train")
    os.remove(tmp_path / "model" / "model.pt")
    assert run_main(tmp_path, data_dir, "--do_eval") == 2
    assert "model.pt: no trained model there. Train first (--do_train)" in capsys.readouterr().err


def test_truncated_checkpoint_is_reported(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train")
    path = tmp_path / "model" / "model.pt"
    path.write_bytes(path.read_bytes()[:2000])
    assert run_main(tmp_path, data_dir, "--do_eval") == 2
    assert "the checkpoint is corrupt or not one of ours" in capsys.readouterr().err


def test_checkpoint_with_other_dims_lists_the_mismatch(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train")
    assert run_main(tmp_path, data_dir, "--do_eval", "--hidden_dim", "32", "--attention", "additive") == 2
    err = capsys.readouterr().err
    assert "hidden_dim: checkpoint 16 vs now 32" in err and "attention: checkpoint concat vs now additive" in err


def test_eval_takes_model_settings_and_vocabulary_from_the_checkpoint(tmp_path, tiny_data):
    """Two runs with vocabularies of equal size and different words: each model is scored with its own."""
    data_dir, _ = tiny_data
    for name, vocab_from in (("all", "all"), ("train", "train")):
        (tmp_path / name).mkdir()
        run_main(tmp_path / name, data_dir, "--do_train", "--do_eval", "--vocab_from", vocab_from,
                 "--word_vocab_size", "20")
    sizes = [len(torch.load(tmp_path / n / "model" / "model.pt", weights_only=True)["vocab"]["words"])
             for n in ("all", "train")]
    assert sizes == [20, 20]
    for name in ("all", "train"):
        model_dir = tmp_path / name / "model"
        first = json.loads((model_dir / "metrics.json").read_text())["test"]
        # no model flag at all: the checkpoint's dimensions (hidden_dim 16, ...) and vocabulary are used
        assert main.main(["--data_dir", str(data_dir), "--model_dir", str(model_dir), "--do_eval", "--offline",
                          "--no_progress"]) == 0
        again = json.loads((model_dir / "metrics.json").read_text())["test"]
        assert again == first


def test_checkpoint_never_unpickles_objects(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, path)  # as the seed code saved its args
    with pytest.raises(trainer.CheckpointError, match="corrupt or not one of ours"):
        trainer.load_checkpoint(str(path))


def test_interrupt_keeps_best_checkpoint(tmp_path, tiny_data, monkeypatch, caplog):
    data_dir, _ = tiny_data
    calls = {"n": 0}
    real_loss = model.ACN.loss

    def loss_then_interrupt(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # in epoch 2 (3 steps per epoch): epoch 1's checkpoint exists
            raise KeyboardInterrupt
        return real_loss(self, batch)

    monkeypatch.setattr(model.ACN, "loss", loss_then_interrupt)
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "3") == 130
    assert "Interrupted (SIGINT) at step 4; the best checkpoint so far (epoch 1" in caplog.text
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert saved["epoch"] == 1
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["interrupted"] is True and len(metrics["history"]) == 1
    assert [p.name for p in (tmp_path / "model").iterdir() if p.name.endswith(".tmp")] == []


def test_interrupt_before_the_first_checkpoint_does_not_offer_one(tmp_path, tiny_data, monkeypatch, caplog):
    data_dir, _ = tiny_data

    def interrupt(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(model.ACN, "loss", interrupt)
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 130
    assert "no checkpoint had been saved yet" in caplog.text and "--do_eval" not in caplog.text


def test_progress_bars_stay_out_of_a_redirected_log(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data
    argv = ["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), "--do_train", "--do_eval",
            *[flag for flag in SMALL_MODEL if flag != "--no_progress"]]
    assert main.main(argv) == 0
    err = capsys.readouterr().err  # not a terminal, as a log file
    assert "\r" not in err and "\x1b" not in err and "Training" not in err


# ---------------------------------------------------------------------------------------------------------------
# Arguments fail before any data is read

@pytest.mark.parametrize("flags, message", [
    (["--max_seq_len", "0"], "argument --max_seq_len: expected a positive integer, got '0'"),
    (["--learning_rate", "-1"], "argument --learning_rate: expected a positive number, got '-1'"),
    (["--optimizer", "sgd"], "argument --optimizer: invalid choice: 'sgd'"),
    (["--kernel_lst", "2,x"], "argument --kernel_lst: expected comma-separated positive integers"),
    (["--hidden_dim", "15"], "argument --hidden_dim: must be even"),
    ([], "nothing to do"),
    (["--max_seq_len", "5000"], "argument --max_seq_len: expected an integer from 1 to 1000, got '5000'"),
    (["--architecture", "authors", "--max_seq_len", "500"], "--max_seq_len: at most 200 with --architecture authors"),
    (["--max_word_len", "100000"], "argument --max_word_len: expected an integer from 1 to 200, got '100000'"),
    (["--learning_rate", "1e-50"], "(the weights are float32: a smaller one is 0 there), got '1e-50'"),
])
def test_impossible_arguments_stop_at_start(flags, message, capsys, tmp_path):
    do = [] if flags == [] else ["--do_train"]
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--data_dir", str(tmp_path / "does-not-exist"), "--model_dir", str(tmp_path / "model"), *do, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_offline_names_url_path_and_flag(tmp_path, capsys):
    assert main.main(["--data_dir", str(tmp_path), "--model_dir", str(tmp_path / "model"), "--do_train", "--offline",
                      "--no_w2v"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/train is missing and --offline forbids downloading it from https://" in err
    assert "--data_dir" in err


def test_logging_steps_evaluate_inside_epochs(tmp_path, tiny_data):
    data_dir, _ = tiny_data  # 40 tweets, batch 16: 3 steps per epoch
    run_main(tmp_path, data_dir, "--do_train", "--logging_steps", "2")
    history = json.loads((tmp_path / "model" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [2, 3, 4, 6]
    assert [round(h["epoch"], 3) for h in history] == [0.667, 1, 1.333, 2]


def test_rmsprop_and_vocab_from_train(tmp_path, tiny_data):
    data_dir, splits = tiny_data
    assert isinstance(trainer.make_optimizer("rmsprop", [torch.zeros(1, requires_grad=True)], 0.1),
                      torch.optim.RMSprop)
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--optimizer", "rmsprop",
                    "--vocab_from", "train") == 0
    vocab = torch.load(tmp_path / "model" / "model.pt", weights_only=True)["vocab"]
    assert vocab["built_from"] == ["train"]
    train_chars = {c for _, tokens in splits["train"] for tok, _ in tokens for c in tok}
    assert set(vocab["chars"][2:]) == train_chars
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["optimizer"] == "rmsprop" and config["vocab"]["includes_test_words"] is False


# ---------------------------------------------------------------------------------------------------------------
# The authors' architecture and protocol

def test_preset_authors_sets_the_released_setup_and_explicit_flags_win(tmp_path, tiny_data, caplog):
    data_dir, splits = tiny_data
    caplog.set_level("INFO")
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--preset", "authors",
                    "--num_train_epochs", "1") == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    kept = {"num_train_epochs": 1, "max_seq_len": 8}  # given explicitly (max_seq_len by SMALL_MODEL)
    assert config["preset"] == "authors" and config["preset_kept"] == kept
    assert config["preset_set"] == {k: v for k, v in flags.PRESETS["authors"].items() if k not in kept}
    assert (config["optimizer"], config["train_batch_size"], config["model_config"]["architecture"]) == \
        ("rmsprop", 10, "authors")
    assert "given explicitly, these win over it: {'num_train_epochs': 1, 'max_seq_len': 8}" in caplog.text
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert saved["vocab"]["word_form"] == "raw" and "Obama" in saved["vocab"]["words"]  # case kept, as released
    assert any(key.startswith("text_encoder") or key.startswith("char_cnn") for key in saved["model"])
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["tokens"] == sum(len(tokens) for _, tokens in splits["test"])  # every token scored
    # evaluation and prediction rebuild the authors' model from the checkpoint alone
    assert main.main(["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), "--do_eval",
                      "--offline", "--no_progress"]) == 0
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["test"] == metrics["test"]


def test_authors_training_keeps_the_last_words_of_a_long_tweet():
    tweets = [data.Tweet("1", [f"w{i}" for i in range(40)], ["O"] * 39 + ["B-PER"], 1)]
    vocab = data.build_vocab([tweets], tweets, 0, 0, ["train"], word_form="raw")
    last = data.encode_tweets(tweets, vocab, 30, max_seq_len=35, keep="last")[0]
    first = data.encode_tweets(tweets, vocab, 30, max_seq_len=35)[0]
    assert last.word_ids.tolist() == [vocab.word_index[f"w{i}"] for i in range(5, 40)]  # pad_sequences' "pre"
    assert first.word_ids.tolist() == [vocab.word_index[f"w{i}"] for i in range(35)]
    assert last.tag_ids[-1] == vocab.tag_index["B-PER"]


@pytest.mark.parametrize("flags", [["--architecture", "authors", "--no_img"],
                                   ["--preset", "authors", "--attention", "additive"]])
def test_authors_architecture_refuses_what_it_does_not_have(flags, capsys):
    with pytest.raises(SystemExit):
        main.parse_args(["--do_train", *flags])
    assert "--architecture authors has no text-only variant" in capsys.readouterr().err


def test_eval_only_never_reads_the_training_file(tmp_path, tiny_data):
    data_dir, _ = tiny_data
    run_main(tmp_path, data_dir, "--do_train", "--num_train_epochs", "1")
    os.remove(data_dir / "train")  # with --offline, a read (or download) of it would fail the run
    assert run_main(tmp_path, data_dir, "--do_eval") == 0
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["test"]["tweets"] == 15


def test_anonymous_memory_sampler_sees_a_short_peak():
    sampler = utils.AnonymousMemorySampler(interval=0.01)
    before = sampler.peak_gb
    block = torch.ones(300 * 2 ** 20 // 4)  # 300 MiB of process memory, released at once
    time.sleep(0.1)
    del block
    time.sleep(0.05)
    sampler.stop()
    assert sampler.peak_gb - before > 0.28  # GB: the 0.31 GB block was seen although it is gone
