"""Integration test on the real Twitter-2017 text (UMT's release, found through TWITTER2017_DIR), text only.

Unset: skipped with that reason. Set but missing: fails. Point it at the folder with train.txt/valid.txt/test.txt."""
import json
import os
import re

import pytest
from seqeval.metrics.sequence_labeling import get_entities

import data_loader as data
import main
import downloads
from conftest import SMALL_MODEL, real_data_folder

EXPECTED = {"train.txt": (3373, 53007), "valid.txt": (723, 11309), "test.txt": (723, 11330)}
IMAGE_ID = re.compile(r"\d+_\d+_\d+(_\d+)?|O_\d+")  # 17_06_12483, 16_05_01_6, O_1926


@pytest.fixture(scope="module")
def twitter2017_dir():
    return real_data_folder("TWITTER2017_DIR", "train.txt/valid.txt/test.txt")


@pytest.fixture(scope="module")
def splits(twitter2017_dir):
    return {name: data.read_tweets(os.path.join(twitter2017_dir, name)) for name in EXPECTED}


def test_reads_every_tweet_and_token(splits):
    assert tuple(EXPECTED) == downloads.DATASETS["twitter2017"].split_files
    for name, (tweets, stats) in splits.items():
        assert (stats.tweets, stats.tokens) == EXPECTED[name], name
        assert (stats.missing_tags, stats.empty_tweets, stats.dangling_inside, stats.duplicate_ids) == (0, 0, 0, 0)
        assert all(IMAGE_ID.fullmatch(tweet.img_id) for tweet in tweets)


def test_entity_types_are_the_data_sets(splits):
    types = {tag[2:] for tweets, _ in splits.values() for tweet in tweets for tag in tweet.tags if tag != "O"}
    assert types == set(downloads.DATASETS["twitter2017"].entity_types) == {"PER", "LOC", "ORG", "MISC"}


def test_longest_tweet(splits):
    """Evaluation tags every token, so the longest tweet sets the largest batch width at test time."""
    longest = {name: max(tweets, key=lambda t: len(t.tokens)) for name, (tweets, _) in splits.items()}
    assert {name: (t.img_id, len(t.tokens)) for name, t in longest.items()} == {
        "train.txt": ("17_06_10719", 50), "valid.txt": ("16_05_01_205", 33), "test.txt": ("16_05_01_510", 33)}


def test_text_only_run_evaluates_every_gold_token_and_entity(tmp_path, twitter2017_dir, splits):
    flags = [*SMALL_MODEL, "--num_train_epochs", "1", "--max_seq_len", "20", "--train_batch_size", "64",
             "--eval_batch_size", "256"]
    assert main.main(["--do_train", "--do_eval", "--dataset", "twitter2017", "--data_dir", twitter2017_dir,
                      "--no_img", "--model_dir", str(tmp_path / "model"),
                      *flags]) == 0
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    for split, name in [("dev", "valid.txt"), ("test", "test.txt")]:
        gold = [tweet.tags for tweet in splits[name][0]]
        entities = get_entities(gold)
        assert (metrics[split]["tweets"], metrics[split]["tokens"]) == EXPECTED[name]
        assert metrics[split]["gold_entities"] == len(entities)
        per_type = {kind: sum(1 for e in entities if e[0] == kind) for kind in ("PER", "LOC", "ORG", "MISC")}
        assert {kind: r["support"] for kind, r in metrics[split]["per_type"].items()} == per_type
    assert (metrics["dev"]["gold_entities"], metrics["test"]["gold_entities"]) == (1324, 1351)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    tags = ["O"] + [f"{prefix}-{kind}" for kind in ("PER", "LOC", "ORG", "MISC") for prefix in "BI"]
    assert sorted(config["vocab"]["tags"]) == sorted(tags)
