"""Without network: the README's offline quick start as written, the stand-ins it offers (synthetic features,
random VGG16 weights), and a data set of one's own."""
import json
import os
import re
import shlex

import torch
from PIL import Image

import image_features
import main
import save_vgg_feature
import vgg
from conftest import ROOT, SMALL_MODEL, make_tweets, write_conll


def readme_offline_commands():
    """The commands of the README's code block that follows its **Offline.** paragraph."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = re.search(r"\*\*Offline\.\*\*.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no **Offline.** paragraph followed by a bash block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_offline_quick_start_runs_as_written(tmp_path, monkeypatch, tiny_data, caplog):
    """In a fresh folder holding only the three text files where the README says, every command of the block runs
    and succeeds, with no network (--offline) and nothing else prepared."""
    _, splits = tiny_data
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")
    os.makedirs("data/twitter2015")
    for name in ("train", "dev", "test"):
        write_conll(f"data/twitter2015/{name}", splits[name])
    scripts = {"main.py": main.main, "save_vgg_feature.py": save_vgg_feature.main}
    commands = readme_offline_commands()
    assert len(commands) == 3
    for argv in commands:
        assert argv[0] == "python" and argv[1] in scripts, argv
        assert scripts[argv[1]](argv[2:] + ["--no_progress"] * (argv[1] == "main.py")) == 0, argv
    text_only = json.loads(open("runs/text/metrics.json").read())
    synthetic = json.loads(open("runs/synthetic/metrics.json").read())
    assert text_only["test"]["tweets"] == synthetic["test"]["tweets"] == len(splits["test"])
    assert json.loads(open("runs/synthetic/config.json").read())["image_features"]["provenance"]["mode"] == \
        "synthetic"
    assert "holds synthetic features" in caplog.text


def test_random_weights_stand_in_for_imagenet_in_extraction(tmp_path, capsys):
    weights = tmp_path / "vgg16-random.pth"
    assert save_vgg_feature.main(["--random_weights", str(weights)]) == 0
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(vgg.VGG16Features().state_dict())
    data_dir = tmp_path / "d"
    (data_dir / "ner_img").mkdir(parents=True)
    for name, tweets in (("train", make_tweets(2, 1)), ("dev", make_tweets(1, 2)), ("test", make_tweets(1, 3))):
        write_conll(data_dir / name, tweets)
        for img_id, _ in tweets:
            Image.new("RGB", (64, 48), (200, 30, 30)).save(data_dir / "ner_img" / f"{img_id}.jpg")
    assert save_vgg_feature.main(["--data_dir", str(data_dir), "--vgg_weights", str(weights), "--offline",
                                  "--workers", "0"]) == 0
    saved, provenance = image_features.read_features(data_dir / "img_vgg_features.pt")
    assert len(saved) == 4 and provenance["weights_file"] == "vgg16-random.pth"
    assert all(value.shape == (49, 512) for value in saved.values())


def test_a_data_set_of_ones_own_is_run_and_reported_under_its_name(tmp_path):
    data_dir = tmp_path / "mydata"
    data_dir.mkdir()
    files = {"train.txt": make_tweets(30, 21), "valid.txt": make_tweets(8, 22), "test.txt": make_tweets(6, 23)}
    for name, tweets in files.items():
        write_conll(data_dir / name, tweets)
    assert save_vgg_feature.main(["--dataset", "mydata", "--data_dir", str(data_dir), "--synthetic"]) == 0
    model_dir = tmp_path / "runs"
    assert main.main(["--dataset", "mydata", "--data_dir", str(data_dir), "--model_dir", str(model_dir),
                      *SMALL_MODEL, "--num_train_epochs", "1", "--do_train", "--do_eval", "--seeds", "7,8"]) == 0
    assert json.loads((model_dir / "seed_7" / "config.json").read_text())["dataset"] == "mydata"
    assert json.loads((model_dir / "seed_8" / "metrics.json").read_text())["test"]["tweets"] == 6
    assert "Data set mydata;" in (model_dir / "results.md").read_text()
