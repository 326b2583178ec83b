"""--as_released and its quirks in a run (main.py), one test each, on small files written here without a blank line
after their last tweet (as the public files); the rules themselves are tested in test_released.py. A run on the
real Twitter-2015 files (TWITTER2015_DIR) is at the end; unset: skipped with that reason."""
import json

import numpy as np
import pytest
import torch

import as_released
import data_loader as data
import flags
import image_features
import main
import released
import trainer
from conftest import (SMALL_MODEL, make_tweets, real_data_folder, run_main, write_conll, write_features,
                      write_public_style)
from model import ModelConfig
from model_authors import AuthorsACN
from test_main import read_predictions

LONG_TWEET = ("long-img", [("Obama", "B-PER")] + [("the", "O")] * 38 + [("Paris", "B-LOC")])  # 40 tokens


@pytest.fixture
def public_data(tmp_path):
    """train 30, dev 8, test 11 tweets (the last one 40 tokens long, a PER outside its last 35), every file ending
    without a blank line, and a feature per image."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    splits = {"train": make_tweets(30, 1), "dev": make_tweets(8, 2), "test": make_tweets(10, 3) + [LONG_TWEET]}
    for name, tweets in splits.items():
        write_public_style(data_dir / name, tweets)
    write_features(data_dir / "img_vgg_features.pt", [img_id for tweets in splits.values() for img_id, _ in tweets])
    return data_dir, splits


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_released_pairing_trains_and_scores_the_released_slots_with_their_images(tmp_path, public_data,
                                                                                 monkeypatch):
    data_dir, splits = public_data
    seen = {}
    encode = main.encode_splits

    def spy(splits_, vocab, features, config, max_seq_len):  # the image row each slot's example reads
        encode(splits_, vocab, features, config, max_seq_len)
        seen.update(splits=splits_, features=features)
    monkeypatch.setattr(main, "encode_splits", spy)
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--released_pairing") == 0
    model_dir = tmp_path / "model"
    config, metrics = read_json(model_dir / "config.json"), read_json(model_dir / "metrics.json")
    tokens = {name: [[token for token, _ in tweet] for _, tweet in tweets] for name, tweets in splits.items()}
    ids = {name: [img_id for img_id, _ in tweets] for name, tweets in splits.items()}
    # train: 30 slots, the last = train 29 + dev 0 (its tokens are trained on); dev: 8 slots, slot i = dev tweet
    # i+1 up to slot 5, slot 6 = dev 7 + test 0, slot 7 = test 1, each with dev image i; test: 11 - 2 = 9 slots,
    # slot i = test tweet i+2 with test image i; test images 9 and 10 unused.
    assert config["released_quirks"] == ["released_pairing"]
    assert config["released_pairing"] is True  # the flag; what it made of the files is in "released_slots"
    assert config["released_slots"]["train"] == {"slots": 30, "own_tweet_and_image": 29, "merged_tweets": 1,
                                                 "holding_another_files_tweet": 1, "tweet_minus_image": {"0": 29},
                                                 "unused_images": 0}
    assert config["released_slots"]["dev"]["tweet_minus_image"] == {"1": 6}
    assert config["data"]["train"]["tokens"] == sum(map(len, tokens["train"])) + len(tokens["dev"][0])
    test_summary = {"slots": 9, "own_tweet_and_image": 0, "merged_tweets": 0, "holding_another_files_tweet": 0,
                    "tweet_minus_image": {"2": 9}, "unused_images": 2}
    assert config["released_slots"]["test"] == metrics["test"]["released_slots"] == test_summary
    assert metrics["test"]["tweets"] == 9 and metrics["test"]["tokens"] == sum(map(len, tokens["test"][2:]))
    assert "authors_scorer" not in metrics["test"]
    written = read_predictions(model_dir / "test_predictions.txt")
    assert [img_id for img_id, _ in written] == ids["test"][:9]
    assert [[f[0] for f in fields] for _, fields in written] == tokens["test"][2:]
    dev = read_predictions(model_dir / "dev_predictions.txt")
    assert dev[0][0] == ids["dev"][0] and [f[0] for f in dev[0][1]] == tokens["dev"][1]
    assert [f[0] for f in dev[6][1]] == tokens["dev"][7] + tokens["test"][0]
    rows = seen["features"].rows(ids["test"][:9])  # the features read are the slots' images, not their tweets'
    assert [example.feature_row for example in seen["splits"]["test"].examples] == rows
    assert rows != seen["features"].rows(ids["test"][2:])
    # --do_eval takes the pairing from config.json; asking it of a run trained without is refused.
    assert run_main(tmp_path, data_dir, "--do_eval") == 0
    assert read_json(model_dir / "metrics.json")["test"]["tweets"] == 9


def test_released_pairing_is_refused_for_files_the_released_script_could_not_pair(tmp_path, tiny_data, capsys):
    data_dir, _ = tiny_data  # write_conll ends every file with a blank line: test gets an empty 16th sentence
    assert run_main(tmp_path, data_dir, "--do_train", "--released_pairing") == 2
    assert "test has 16 sentences for 15 images" in capsys.readouterr().err
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 0
    assert run_main(tmp_path, data_dir, "--do_eval", "--released_pairing") == 2
    assert "trained and scored on other data than --released_pairing True" in capsys.readouterr().err


def test_released_scorer_is_reported_next_to_seqeval_and_changes_nothing_else(tmp_path, public_data):
    data_dir, _ = public_data
    for name, extra in (("plain", []), ("scored", ["--released_scorer"])):
        assert run_main(tmp_path / name, data_dir, "--do_train", "--do_eval", *extra) == 0
    plain, scored = (read_json(tmp_path / name / "model" / "metrics.json") for name in ("plain", "scored"))
    for split in ("dev", "test"):  # the same model, the same seqeval scores and predictions
        authors = scored[split].pop("authors_scorer")
        assert scored[split] == plain[split]
        assert (tmp_path / "plain" / "model" / f"{split}_predictions.txt").read_text() == \
            (tmp_path / "scored" / "model" / f"{split}_predictions.txt").read_text()
        written = read_predictions(tmp_path / "scored" / "model" / f"{split}_predictions.txt")
        expected = released.authors_score([[f[1] for f in fields] for _, fields in written],
                                          [[f[2] for f in fields] for _, fields in written])
        assert {k: authors[k] for k in expected._fields} == expected._asdict()
    # The test file's 40-token tweet is scored on its last 35 tokens: 5 tokens and its PER fewer than seqeval.
    authors = read_json(tmp_path / "scored" / "model" / "metrics.json")["test"]["authors_scorer"]
    assert (authors["tweets"], authors["tokens"]) == (plain["test"]["tweets"], plain["test"]["tokens"] - 5)
    assert authors["gold_entities"] == plain["test"]["gold_entities"] - 1 and authors["window"] == 35


def test_a_predicted_pad_label_is_a_chunk_for_the_authors_scorer_and_O_for_seqeval():
    tweets = [data.Tweet(f"i{k}", ["Obama", "in", "Paris"], ["B-PER", "O", "B-LOC"], 1) for k in range(3)]
    vocab = data.build_vocab([tweets], tweets, 0, 0, ["train"], "raw")
    features = image_features.FeatureTable([torch.zeros(49, 512)], {}, [])
    split = data.Split("test", "test", tweets, data.ReadStats(), data.encode_tweets(tweets, vocab, 30, features))
    torch.manual_seed(0)
    model = AuthorsACN(ModelConfig(len(vocab.words), len(vocab.chars), len(vocab.tags), hidden_dim=8,
                                   word_emb_dim=8, char_emb_dim=4, final_char_dim=4, num_filters=4,
                                   architecture="authors"))
    with torch.no_grad():
        model.emission.bias[model.pad_label] = 100.0  # the pad label wins on every real token
    metrics, predicted = trainer.evaluate(model, split, vocab, features, 8, torch.device("cpu"), False, True)
    # seqeval and the predictions returned read the pad label as O (as without the scorer): nothing predicted.
    assert predicted == [["O"] * 3] * 3 and metrics["predicted_entities"] == 0
    # The authors' scorer: a run of '0' is one chunk per tweet, never correct -> 3 predicted, 0 correct, F1 0.
    authors = metrics["authors_scorer"]
    assert (authors["pad_label_predictions"], authors["predicted_entities"], authors["correct_entities"]) == (9, 3, 0)
    assert (authors["gold_entities"], authors["f1"], authors["accuracy"]) == (6, 0.0, 0.0)
    assert trainer.evaluate(model, split, vocab, features, 8, torch.device("cpu"), False)[0] == \
        {k: v for k, v in metrics.items() if k != "authors_scorer"}


def test_byte_chars_are_utf8_bytes_cut_at_max_word_len(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    odd = [("café", "O"), ("Über", "B-PER"), ("🇫🇷", "O"), ("a" + "é" * 15, "O")]  # the last: 31 bytes
    splits = {"train": make_tweets(20, 1) + [("odd", odd)], "dev": make_tweets(5, 2), "test": make_tweets(5, 3)}
    for name, tweets in splits.items():
        write_conll(data_dir / name, tweets)
    write_features(data_dir / "img_vgg_features.pt", [img_id for tweets in splits.values() for img_id, _ in tweets])
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--byte_chars", "--max_word_len", "30") == 0
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    every_byte = {byte for tweets in splits.values() for _, tokens in tweets for token, _ in tokens
                  for byte in token.encode("utf-8")}
    assert saved["vocab"]["char_form"] == "bytes"
    assert {ord(char) for char in saved["vocab"]["chars"][2:]} == every_byte  # one entry per byte value
    assert "é" not in saved["vocab"]["chars"] and "\xc3" in saved["vocab"]["chars"]
    vocab = data.Vocab.from_dict(saved["vocab"])
    example = data.encode_tweets([data.Tweet("x", [odd[3][0]], ["O"], 1)], vocab, 30)[0]
    # 'a' + 14 x (c3, a9) + c3: 30 bytes, the cut inside the 15th 'é'.
    assert example.char_ids.shape == (1, 30)
    assert example.char_ids[0, -1] == vocab.char_index["\xc3"] and example.char_ids[0, 0] == vocab.char_index["a"]
    assert read_json(tmp_path / "model" / "config.json")["released_quirks"] == ["byte_chars"]
    assert run_main(tmp_path, data_dir, "--do_eval") == 0  # the checkpoint's vocabulary says bytes
    plain = tmp_path / "plain"
    assert run_main(plain, data_dir, "--do_train") == 0
    assert torch.load(plain / "model" / "model.pt", weights_only=True)["vocab"]["char_form"] == "text"
    assert run_main(plain, data_dir, "--do_eval", "--byte_chars") == 2  # a checkpoint of code points


def test_released_word_matrix_pad_row_and_ascii_lowering(tmp_path, public_data, monkeypatch):
    data_dir, _ = public_data
    seen = []
    build = trainer.build_model
    monkeypatch.setattr(trainer, "build_model", lambda config, vectors=None: seen.append(vectors) or
                        build(config, vectors))
    ones = " ".join(["1.0"] * 8)
    vectors = tmp_path / "vectors.txt"

    def train(name, *flags_):  # the authors' network with word vectors from `vectors` (SMALL_MODEL has --no_w2v)
        return main.main(["--data_dir", str(data_dir), "--model_dir", str(tmp_path / name / "model"),
                          *[a for a in SMALL_MODEL if a != "--no_w2v"], "--do_train", "--num_train_epochs", "1",
                          "--architecture", "authors", "--max_word_len", "30", "--wordvec_dir", str(tmp_path),
                          "--w2v_file", "vectors.txt", *flags_])
    # "pad" has a vector: row 0 starts as it (not zeros).
    vectors.write_text(f"pad {ones}\nobama {' '.join(['2.0'] * 8)}\n", encoding="utf-8")
    assert train("a", "--released_word_matrix") == 0
    assert torch.equal(seen[-1][0], torch.ones(8))
    assert read_json(tmp_path / "a" / "model" / "config.json")["released_quirks"] == ["released_word_matrix"]
    assert train("b") == 0
    assert torch.equal(seen[-1][0], torch.zeros(8))  # without the flag: zeros
    # No "pad": a uniform(-0.25, 0.25) draw, numpy seeded with the run's seed (7).
    vectors.write_text(f"obama {ones}\n", encoding="utf-8")
    assert train("c", "--released_word_matrix") == 0
    draw = released.pad_row_vector({}, 8, np.random.default_rng(7))
    assert torch.equal(seen[-1][0], torch.tensor(draw, dtype=torch.float32)) and seen[-1][0].abs().max() <= 0.25
    # Python 2 lowered ASCII letters only: 'Über' takes the vector of 'Über', not of 'über'.
    assert data.WORD_FORMS["raw_ascii"][1]("Über") == "Über" and data.WORD_FORMS["raw"][1]("Über") == "über"
    assert torch.load(tmp_path / "c" / "model" / "model.pt", weights_only=True)["vocab"]["word_form"] == "raw_ascii"
    assert torch.equal(as_released.pad_row(vectors, 8, 7), torch.tensor(draw, dtype=torch.float32))


def test_as_released_switches_on_every_quirk_and_says_so(tmp_path, public_data, caplog):
    data_dir, _ = public_data
    caplog.set_level("INFO")
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--preset", "authors", "--as_released",
                    "--num_train_epochs", "1", "--max_seq_len", "35") == 0
    config = read_json(tmp_path / "model" / "config.json")
    metrics = read_json(tmp_path / "model" / "metrics.json")
    assert config["released_quirks"] == list(flags.RELEASED_QUIRKS) == ["released_pairing", "released_scorer",
                                                                        "byte_chars", "released_word_matrix"]
    assert config["as_released"] is True and all(config[flag] for flag in flags.RELEASED_QUIRKS)
    assert metrics["test"]["tweets"] == metrics["test"]["authors_scorer"]["tweets"] == 9
    assert torch.load(tmp_path / "model" / "model.pt", weights_only=True)["vocab"]["char_form"] == "bytes"
    assert "Quirks of the released pipeline on (--as_released): released_pairing, released_scorer, byte_chars, " \
           "released_word_matrix; off: none" in caplog.text
    with pytest.raises(SystemExit):  # the released pipeline includes the released network
        main.parse_args(["--do_train", "--as_released"])


def test_without_the_switches_a_run_has_none_of_it(tmp_path, public_data, caplog):
    data_dir, splits = public_data
    caplog.set_level("INFO")
    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval") == 0
    config = read_json(tmp_path / "model" / "config.json")
    metrics = read_json(tmp_path / "model" / "metrics.json")
    assert config["released_quirks"] == [] and config["released_slots"] is None and config["released_pairing"] is False
    assert not any(config[flag] for flag in ["as_released", *flags.RELEASED_QUIRKS])
    assert "authors_scorer" not in metrics["test"] and "released_slots" not in metrics["test"]
    assert metrics["test"]["tweets"] == len(splits["test"])  # every tweet of the file, each with its own image
    assert "Quirks of the released pipeline" not in caplog.text


def test_real_twitter2015_released_pairing_scores_3255_test_tweets(tmp_path):
    folder = real_data_folder("TWITTER2015_DIR", "train/dev/test")
    assert main.main(["--data_dir", folder, "--model_dir", str(tmp_path / "model"), *SMALL_MODEL, "--no_img",
                      "--num_train_epochs", "1", "--train_batch_size", "64", "--do_train", "--do_eval",
                      "--released_pairing", "--released_scorer"]) == 0
    test = read_json(tmp_path / "model" / "metrics.json")["test"]
    # Test tweets 2-3256 of the file: 3,255 tweets, 52,822 tokens less the 37 of tweets 0 and 1, and the gold
    # entities of those 3,255 (5,215 less 4); the authors' scorer sees 1 token fewer (one tweet has 36 tokens).
    assert (test["tweets"], test["tokens"], test["gold_entities"]) == (3255, 52785, 5211)
    authors = test["authors_scorer"]
    assert (authors["tweets"], authors["tokens"], authors["gold_entities"]) == (3255, 52784, 5211)
    assert test["released_slots"]["tweet_minus_image"] == {"2": 3255}
    assert test["released_slots"]["unused_images"] == 2
