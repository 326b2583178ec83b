"""Shared helpers: small IMGID-CoNLL files and synthetic VGG features written by the tests themselves."""
import os
import random
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PEOPLE = ["Obama", "Messi", "Beyonce", "Zimmerman", "Taylor"]
PLACES = ["Paris", "London", "Texas", "Boston", "Kenya"]
FILLER = ["the", "is", "in", "at", "today", "love", "#fun", "@friend", "http://t.co/x1", "!!!", "42", "so", "big"]


def make_tweets(n, seed, min_len=3, max_len=12):
    """n tweets as (img_id, [(token, tag)]): people are PER, places LOC (one or two tokens), the rest O."""
    rng = random.Random(seed)
    tweets = []
    for i in range(n):
        tokens = []
        for _ in range(rng.randint(min_len, max_len)):
            roll = rng.random()
            if roll < 0.15:
                tokens.append((rng.choice(PEOPLE), "B-PER"))
            elif roll < 0.25:
                tokens += [(rng.choice(PLACES), "B-LOC"), ("City", "I-LOC")]
            else:
                tokens.append((rng.choice(FILLER), "O"))
        tweets.append((f"{seed}_{i}", tokens))
    return tweets


def write_conll(path, tweets):
    """IMGID-CoNLL file of [(img_id, [(token, tag)])]; a tag of None writes the token alone (an untagged file)."""
    with open(path, "w", encoding="utf-8") as f:
        for img_id, tokens in tweets:
            f.write(f"IMGID:{img_id}\n")
            for token, tag in tokens:
                f.write(f"{token}\t{tag}\n" if tag is not None else f"{token}\n")
            f.write("\n")
    return path


def write_features(path, img_ids, dtype=torch.float32, seed=0, shape=(49, 512)):
    generator = torch.Generator().manual_seed(seed)
    feats = {img_id: torch.rand(*shape, generator=generator).to(dtype) for img_id in img_ids}
    torch.save(feats, path)
    return feats


@pytest.fixture
def tiny_data(tmp_path):
    """A data folder with train/dev/test and a features file; dev has a tweet longer than max_seq_len=8."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    splits = {"train": make_tweets(40, 1), "dev": make_tweets(12, 2, max_len=20), "test": make_tweets(15, 3)}
    for name, tweets in splits.items():
        write_conll(data_dir / name, tweets)
    ids = [img_id for tweets in splits.values() for img_id, _ in tweets]
    write_features(data_dir / "img_vgg_features.pt", ids)
    return data_dir, splits


SMALL_MODEL = ["--hidden_dim", "16", "--word_emb_dim", "8", "--char_emb_dim", "6", "--final_char_dim", "8",
               "--num_filters", "4", "--num_train_epochs", "2", "--no_w2v", "--no_progress", "--offline",
               "--max_seq_len", "8"]


def run_main(tmp_path, data_dir, *extra):
    import main
    return main.main(["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), *SMALL_MODEL, *extra])
