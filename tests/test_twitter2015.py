"""Integration test on the real Twitter-2015 text (found through TWITTER2015_DIR) with synthetic image features.

Unset: skipped with that reason. Set but missing: fails. .ci/run sets it to ../shared/data/twitter2015."""
import json
import os
import random
import shutil

import pytest
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

import data_loader as data
import trainer
from conftest import real_data_folder, run_main, write_conll

EXPECTED = {"train": (4000, 64439), "dev": (1000, 16178), "test": (3257, 52822)}


@pytest.fixture(scope="module")
def twitter2015_dir():
    return real_data_folder("TWITTER2015_DIR", "train/dev/test")


def test_reads_every_tweet_and_token(twitter2015_dir):
    for name, (tweets, tokens) in EXPECTED.items():
        read, stats = data.read_tweets(os.path.join(twitter2015_dir, name))
        assert (stats.tweets, stats.tokens) == (tweets, tokens), name
        assert stats.missing_tags == 0 and stats.empty_tweets == 0
        assert all(tweet.img_id.isdigit() for tweet in read)


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.3])
def test_score_gives_seqeval_report_and_scores_exactly(twitter2015_dir, noise):
    """trainer.score reads seqeval's entities once per side: its numbers are those of seqeval's
    classification_report and precision/recall/f1_score, float for float, on the real test tags with some tags
    changed at random."""
    gold = [tweet.tags for tweet in data.read_tweets(os.path.join(twitter2015_dir, "test"))[0]]
    rng = random.Random(noise)
    tags = sorted({tag for tags in gold for tag in tags})
    predicted = [[rng.choice(tags) if rng.random() < noise else tag for tag in tags_] for tags_ in gold]
    scores = trainer.score(gold, predicted)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    assert scores["per_type"] == {
        name: {"precision": r["precision"], "recall": r["recall"], "f1": r["f1-score"], "support": r["support"]}
        for name, r in report.items() if not name.endswith(" avg")}
    assert (scores["precision"], scores["recall"], scores["f1"]) == (
        precision_score(gold, predicted, zero_division=0), recall_score(gold, predicted, zero_division=0),
        f1_score(gold, predicted, zero_division=0))
    assert scores["gold_entities"] == len(get_entities(gold)) == 5215
    assert scores["predicted_entities"] == len(get_entities(predicted))
    assert (noise == 0.0) == (scores["f1"] == 1.0)


@pytest.mark.parametrize("gold, predicted", [
    ([["B-PER", "O"], ["O"]], [["O", "O"], ["O"]]),                     # nothing predicted
    ([["O", "O"], ["O"]], [["B-LOC", "I-LOC"], ["B-PER"]]),             # nothing to find
    ([["B-PER", "I-PER"], []], [["B-PER", "B-ORG"], []]),               # a type only predicted, an empty tweet
    ([["I-MISC", "B-PER"], ["B-PER"]], [["B-MISC", "B-PER"], ["I-PER"]]),  # I- starts, entities across tweets
])
def test_score_matches_seqeval_where_a_count_is_zero(gold, predicted):
    """The divisions by zero of a side without entities (of one type or of any) give seqeval's zero_division=0."""
    scores = trainer.score(gold, predicted)
    p, r, f, support = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)
    names = sorted({name for name, _, _ in get_entities(gold) + get_entities(predicted)})
    assert scores["per_type"] == {name: {"precision": p[i], "recall": r[i], "f1": f[i], "support": support[i]}
                                  for i, name in enumerate(names)}
    assert (scores["precision"], scores["recall"], scores["f1"]) == tuple(
        precision_recall_fscore_support(gold, predicted, average="micro", zero_division=0)[:3])


@pytest.mark.parametrize("gold, predicted, message", [
    ([["B-PER"], ["O"]], [["B-PER"]], "2 tweets of gold tags but 1 of predicted ones"),
    ([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER", "O"]], "tweet 1: 1 gold tags but 2 predicted ones"),
])
def test_score_refuses_tags_that_do_not_pair_up(gold, predicted, message):
    """As seqeval does: a missing or extra prediction would otherwise shift every entity after it."""
    with pytest.raises(ValueError, match=message):
        trainer.score(gold, predicted)


def test_train_subset_and_evaluate_everything(tmp_path, twitter2015_dir):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    train, _ = data.read_tweets(os.path.join(twitter2015_dir, "train"))
    write_conll(data_dir / "train", [(t.img_id, list(zip(t.tokens, t.tags))) for t in train[:300]])  # first 300
    for name in ("dev", "test"):
        shutil.copy(os.path.join(twitter2015_dir, name), data_dir / name)
    dev, _ = data.read_tweets(str(data_dir / "dev"))
    generator = torch.Generator().manual_seed(0)  # synthetic features for train and dev; test ids get zeros
    torch.save({t.img_id: torch.rand(49, 512, generator=generator).half() for t in train[:300] + dev},
               data_dir / "img_vgg_features.pt")

    assert run_main(tmp_path, data_dir, "--do_train", "--do_eval", "--num_train_epochs", "4",
                    "--learning_rate", "0.005", "--max_seq_len", "35", "--hidden_dim", "64", "--num_filters", "8") == 0
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    for name in ("dev", "test"):
        gold = [t.tags for t in data.read_tweets(os.path.join(twitter2015_dir, name))[0]]
        assert (metrics[name]["tweets"], metrics[name]["tokens"]) == EXPECTED[name]
        assert metrics[name]["gold_entities"] == len(get_entities(gold))
        assert sum(r["support"] for r in metrics[name]["per_type"].values()) == len(get_entities(gold))
    assert metrics["test"]["gold_entities"] == 5215 and metrics["dev"]["gold_entities"] == 1600
    assert metrics["test"]["f1"] > 0.05  # 300 tweets, four epochs, small model: learns something
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["image_features"]["missing_ids"] == 3257  # every test id: zero features, and still evaluated
