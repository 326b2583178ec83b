"""The image pathway works: a tweet is paired with its own image, and the fusion uses what the image says.

Synthetic data where the text cannot tell an entity's type and the image can: every entity word of a tweet is
ambiguous (a name that is a person in some tweets and a place in others), and the type is carried only by the
tweet's image feature, a fixed pattern per type. A model that sees its own tweet's image must beat the text-only
model clearly; the same features handed to other tweets (shuffled ids) must not.
"""
import json
import random

import pytest
import torch

import pathway
import data_loader as data
from conftest import run_main, write_conll

NAMES = ["Jordan", "Washington", "Georgia", "Florence", "Chelsea", "Austin", "Sydney", "Dallas"]
FILLER = ["the", "is", "in", "love", "today", "at", "so", "big", "!!!", "new"]
TYPES = ["PER", "LOC"]


def ambiguous_tweets(n, seed):
    """n tweets (img_id, [(token, tag)], type): the entity words' type is the tweet's type, drawn at random."""
    rng = random.Random(seed)
    tweets = []
    for i in range(n):
        entity_type = rng.choice(TYPES)
        tokens = [(rng.choice(FILLER), "O") for _ in range(rng.randint(2, 6))]
        for _ in range(rng.randint(1, 2)):
            tokens.insert(rng.randint(0, len(tokens)), (rng.choice(NAMES), f"B-{entity_type}"))
        tweets.append((f"{seed}_{i}", tokens, entity_type))
    return tweets


def type_pattern_features(tweets, seed=0):
    """Per image: its type's block of channels lit in every region, plus noise (like the ReLU maps of VGG16); the
    image tells the type of its tweet's entities. (A weaker pattern, 10% of random channels, is learnt from some
    seeds and not others by the tiny model of these tests.)"""
    generator = torch.Generator().manual_seed(seed)
    block = 512 // len(TYPES)
    patterns = {t: torch.zeros(49, 512).index_fill_(1, torch.arange(i * block, (i + 1) * block), 1.0)
                for i, t in enumerate(TYPES)}
    return {img_id: patterns[entity_type] + 0.1 * torch.rand(49, 512, generator=generator)
            for img_id, _, entity_type in tweets}


@pytest.fixture(scope="module")
def pathway_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pathway")
    data_dir = root / "data"
    data_dir.mkdir()
    splits = {"train": ambiguous_tweets(240, 1), "dev": ambiguous_tweets(60, 2), "test": ambiguous_tweets(80, 3)}
    for name, tweets in splits.items():
        write_conll(data_dir / name, [(img_id, tokens) for img_id, tokens, _ in tweets])
    features = type_pattern_features([t for tweets in splits.values() for t in tweets])
    torch.save(features, data_dir / "img_vgg_features.pt")
    ids = list(features)
    shuffled_dir = root / "shuffled"
    shuffled_dir.mkdir()
    for name in splits:
        (shuffled_dir / name).write_bytes((data_dir / name).read_bytes())
    order = ids[:]
    random.Random(0).shuffle(order)  # every tweet gets another tweet's image
    torch.save({img_id: features[other] for img_id, other in zip(ids, order)}, shuffled_dir / "img_vgg_features.pt")

    results = {}
    for architecture in ("paper", "authors"):
        for label, folder, flags in (("image", data_dir, []), ("text only", data_dir, ["--no_img"]),
                                     ("shuffled images", shuffled_dir, [])):
            if architecture == "authors" and label == "text only":
                continue  # the authors have no text-only model: compared with the paper's
            out = root / f"{architecture}_{label.replace(' ', '_')}"
            out.mkdir()
            assert run_main(out, folder, "--do_train", "--do_eval", "--num_train_epochs", "10",
                            "--learning_rate", "0.01", "--max_seq_len", "35", "--architecture", architecture,
                            *flags) == 0
            results[architecture, label] = json.loads((out / "model" / "metrics.json").read_text())["test"]["f1"]
            if label == "image":  # how much the trained model leans on the image (pathway.image_use)
                test = data.read_split("test", str(data_dir / "test"))
                results[architecture, "use"] = pathway.image_use(str(out / "model"), test,
                                                               str(data_dir / "img_vgg_features.pt"),
                                                               str(shuffled_dir / "img_vgg_features.pt"))
    return results


@pytest.mark.parametrize("architecture", ["paper", "authors"])
def test_own_image_beats_text_only_and_shuffled_images_do_not(pathway_runs, architecture):
    image, text = pathway_runs[architecture, "image"], pathway_runs["paper", "text only"]
    shuffled = pathway_runs[architecture, "shuffled images"]
    assert image > 0.9, pathway_runs  # the image settles the type
    assert image > text + 0.25, pathway_runs  # text alone can only guess the type
    assert shuffled < text + 0.1, pathway_runs  # another tweet's image is no help


@pytest.mark.parametrize("architecture", ["paper", "authors"])
def test_image_use_diagnostic_sees_a_model_that_relies_on_its_image(pathway_runs, architecture):
    """pathway.image_use on a model that needs the image: its gate lets the image in, and other tweets' features
    at evaluation cost it what the image gave."""
    use = pathway_runs[architecture, "use"]
    assert use["gate"] > 0.05, use
    assert 0.0 <= use["saturated"] <= 1.0
    assert use["f1"] < pathway_runs[architecture, "image"] - 0.25, (use, pathway_runs)


def test_released_pairing_experiment_runs_each_job_once_and_tabulates_what_finished(tmp_path, capsys):
    """bench.py --released_pairing_experiment: jobs run `parallel` at a time, a job whose metrics.json has test
    scores is not run again, and the table gives mean +- sample std of both scorers over the finished seeds."""
    import sys

    def job(folder, f1, authors_f1):  # a stand-in for main.py: writes the metrics.json a run would
        metrics = {"best_epoch": 2, "test": {"f1": f1, "tweets": 9, "authors_scorer": {"f1": authors_f1, "tweets": 9}}}
        code = (f"import json, os; os.makedirs({str(folder)!r}, exist_ok=True); "
                f"json.dump({metrics!r}, open(os.path.join({str(folder)!r}, 'metrics.json'), 'w'))")
        return str(folder), [sys.executable, "-c", code]
    jobs = [job(tmp_path / "a7", 0.5, 0.4), job(tmp_path / "a8", 0.7, 0.6), job(tmp_path / "b7", 0.1, 0.2)]
    pathway.run_commands(jobs[:2], parallel=2)
    assert capsys.readouterr().out.count("started") == 2
    pathway.run_commands(jobs, parallel=2)  # a7 and a8 are done: only b7 runs
    assert capsys.readouterr().out.count("started") == 1
    table = pathway.experiment_table({("m", "files"): [str(tmp_path / "a7"), str(tmp_path / "a8")],
                                      ("m", "released"): [str(tmp_path / "b7"), str(tmp_path / "b8")],
                                      ("n", "files"): [str(tmp_path / "c7")]})
    # a: 50 and 70 -> 60.00 +- 14.14 (sample std); authors 40 and 60 -> 50.00 +- 14.14. b: one seed of two.
    assert table[2] == "| m | files | 60.00 +- 14.14 | 50.00 +- 14.14 | 50.00 / 40.00, 70.00 / 60.00 | 9 / 9 | 2, 2 " \
                       "(2 of 2 seeds) |"
    assert table[3].endswith("| 10.00 / 20.00 | 9 / 9 | 2 (1 of 2 seeds) |")
    assert table[4] == "| n | files | not run | | | | |"
