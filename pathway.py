"""The image-pathway experiment: does a model use its image when the image carries signal?

Features that carry the entity types of their own tweet (`type_pattern_features`) replace VGG16's; each
architecture is trained under its own protocol with its own tweets' features, with other tweets' features
(shuffled), and text-only, and `image_use` measures how much a trained model leans on the image. `bench.py
--pathway` runs it and prints the table of docs/results.md.

`released_pairing_experiment` (`bench.py --released_pairing_experiment`) trains the same models on the same
features under the released reader's pairing and under the files' own, and scores both with seqeval and the
authors' scorer: what the merged and shifted tweets of the released reader cost a model that uses its image.
"""
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import time

import torch

import data_loader as data
import image_features
import trainer

HERE = os.path.dirname(os.path.abspath(__file__))


def main_command(work_dir, model_dir, extra):
    """main.py --do_train --do_eval with random word vectors on the data folder `work_dir`, as a child's argv."""
    return [sys.executable, os.path.join(HERE, "main.py"), "--do_train", "--do_eval", "--no_w2v", "--offline",
            "--no_progress", "--data_dir", work_dir, "--model_dir", model_dir, *extra]


def full_run(work_dir, extra, model_name="model"):
    """The complete default run as a user types it, in a child process: wall seconds, and the metrics it wrote
    (peak resident memory VmHWM and peak anonymous memory RssAnon, as main.py measured itself)."""
    model_dir = os.path.join(work_dir, model_name)
    command = main_command(work_dir, model_dir, extra)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    return wall, metrics



ENTITY_TYPES = ["PER", "LOC", "ORG", "OTHER"]


def type_pattern_features(splits, seed=0, scale=1.0):
    """Per image: synthetic ReLU noise, plus, for every entity type in its tweet, that type's block of 128
    channels raised by 1 in every region, all times `scale`. The image tells which types its tweet holds, not where
    they are."""
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for split in splits.values():
        for tweet in split.tweets:
            regions = torch.relu(torch.randn(49, 512, generator=generator))
            for i, entity_type in enumerate(ENTITY_TYPES):
                if f"B-{entity_type}" in tweet.tags:
                    regions[:, 128 * i:128 * (i + 1)] += 1.0
            features[tweet.img_id] = (scale * regions).half()
    return features


def feature_folder(data_dir, folder, splits, features):
    """`folder` with copies of the three files and `features` as its img_vgg_features.pt."""
    os.makedirs(folder, exist_ok=True)
    for name in splits:
        shutil.copy(os.path.join(data_dir, name), folder)
    image_features.save_features(features, os.path.join(folder, "img_vgg_features.pt"), provenance=None)
    return folder


def pathway(data_dir, work_dir, epochs, authors_epochs, scale=1.0):
    """Test F1 of text-only, own-image and shuffled-image runs of both architectures, seed 7, each under its own
    protocol: `paper` with the defaults (Adam) for `epochs`, `authors` with --preset authors (RMSprop, batch 10) for
    `authors_epochs`. The authors have no text-only model."""
    splits = {name: data.read_split(name, os.path.join(data_dir, name)) for name in ("train", "dev", "test")}
    features = type_pattern_features(splits, scale=scale)
    ids = list(features)
    shuffled_ids = ids[:]
    random.Random(0).shuffle(shuffled_ids)  # every tweet gets another tweet's image
    folders = {}
    for label, table in (("own", features), ("shuffled", dict(zip(ids, (features[i] for i in shuffled_ids))))):
        folders[label] = feature_folder(data_dir, os.path.join(work_dir, f"pathway_{label}"), splits, table)
    rows = []
    other_features = os.path.join(folders["shuffled"], "img_vgg_features.pt")
    paper = ["--num_train_epochs", str(epochs)]
    authors = ["--preset", "authors", "--num_train_epochs", str(authors_epochs)]
    for architecture, label, flags in (("paper", "text only", [*paper, "--no_img"]), ("paper", "own", paper),
                                       ("paper", "shuffled", paper), ("authors", "own", authors),
                                       ("authors", "shuffled", authors)):
        folder = folders["own" if label == "text only" else label]
        _, metrics = full_run(folder, ["--seed", "7", *flags], f"model_{architecture}_{label.replace(' ', '_')}")
        test = metrics["test"]
        name = f"pathway, {architecture}, {label} image features"
        rows.append((f"{name}: test F1 (P / R)",
                     f"{100 * test['f1']:.2f} ({100 * test['precision']:.2f} / {100 * test['recall']:.2f})"))
        if label == "own":
            use = image_use(os.path.join(folder, f"model_{architecture}_own"), splits["test"],
                            os.path.join(folder, "img_vgg_features.pt"), other_features)
            rows.append((f"{name}: fusion gate g (the image's share of m), mean over test", f"{use['gate']:.3f}"))
            rows.append((f"{name}: share of hv = tanh(W_v v̂) units saturated (|hv| > 0.99)",
                         f"{use['saturated']:.2f}"))
            rows.append((f"{name}: test F1 of this model given other tweets' features", f"{100 * use['f1']:.2f}"))
    return rows


def image_use(model_dir, test, own_features_path, other_features_path):
    """How much a trained model uses the image, on the test set: the mean of its fusion gate g (both architectures
    have one: the image's share of the fused vector), the share of its visual units hv = tanh(W_v v̂) that are
    saturated, and its test F1 when every tweet is given another tweet's features instead of its own."""
    model, vocab, _ = trainer.load_checkpoint(os.path.join(model_dir, trainer.CHECKPOINT_FILE))
    own = image_features.load_image_features(own_features_path, test.img_ids)
    other = image_features.load_image_features(other_features_path, test.img_ids)
    seen = {"gate": [], "visual": []}
    hooks = [model.fusion.gate.register_forward_hook(lambda m, i, out: seen["gate"].append(torch.sigmoid(out))),
             model.fusion.visual.register_forward_hook(lambda m, i, out: seen["visual"].append(torch.tanh(out)))]
    own_examples = data.encode_tweets(test.tweets, vocab, model.config.max_word_len, own)
    trainer.predict(model, own_examples, len(test.tweets), vocab, own, 32, torch.device("cpu"), progress=False)
    for hook in hooks:
        hook.remove()
    gate = torch.cat([g.flatten() for g in seen["gate"]])                         # one value per position
    visual = torch.cat([v.flatten() for v in seen["visual"]])                     # every unit of every position
    with_other = dataclasses.replace(test, examples=data.encode_tweets(test.tweets, vocab, model.config.max_word_len,
                                                                       other))   # the caller's split is left as it is
    scores, _ = trainer.evaluate(model, with_other, vocab, other, 32, torch.device("cpu"), progress=False)
    return {"gate": gate.mean().item(), "saturated": (visual.abs() > 0.99).float().mean().item(), "f1": scores["f1"]}


# ----------------------------------------------------------------------------------------------------------------
# The released reader's pairing against the files' own (bench.py --released_pairing_experiment)

READERS = {"files": [], "released": ["--released_pairing"]}  # every run also scores with the authors' scorer


def experiment_models(paper_epochs, authors_epochs):
    """(name, folder name, feature scale or None for text only, main.py flags) of each model of the experiment,
    in the order they run: `paper` on the type-pattern features as they are, the text-only `paper` model, and
    `authors` on the features x 0.1 (where its fusion gate stays open; the slowest by far)."""
    paper = ["--num_train_epochs", str(paper_epochs)]
    return [("paper, own-image features", "paper_image", 1.0, paper),
            ("paper, text only (--no_img)", "paper_text_only", None, [*paper, "--no_img"]),
            ("authors, features x 0.1", "authors_x0.1", 0.1,
             ["--preset", "authors", "--num_train_epochs", str(authors_epochs)])]


def run_commands(jobs, parallel):
    """Run `jobs` ((model_dir, argv)) `parallel` at a time, each logging to <model_dir>.log; a job whose
    metrics.json already has test scores is not run again (an interrupted experiment resumes)."""
    waiting = [(folder, command) for folder, command in jobs if not finished(folder)]
    running = []
    while waiting or running:
        while waiting and len(running) < parallel:
            folder, command = waiting.pop(0)
            with open(folder + ".log", "w", encoding="utf-8") as log:
                running.append((folder, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
            print(f"started {folder}", flush=True)
        time.sleep(5)
        for folder, process in [job for job in running if job[1].poll() is not None]:
            running.remove((folder, process))
            print(f"finished {folder}: exit {process.returncode}", flush=True)


def finished(folder):
    path = os.path.join(folder, "metrics.json")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return "test" in json.load(f)


def released_pairing_experiment(data_dir, work_dir, paper_epochs, authors_epochs, seeds, parallel=2):
    """Each model of `experiment_models` trained with each seed under both readers (`READERS`), one thread per
    run, `parallel` runs at a time, into <work_dir>/runs/. Returns the rows of the table (`experiment_table`)."""
    splits = {name: data.read_split(name, os.path.join(data_dir, name)) for name in ("train", "dev", "test")}
    models = experiment_models(paper_epochs, authors_epochs)
    folders = {}
    for scale in {scale for _, _, scale, _ in models if scale is not None}:
        folders[scale] = os.path.join(work_dir, f"features_x{scale:g}")
        if not os.path.isfile(os.path.join(folders[scale], "img_vgg_features.pt")):
            feature_folder(data_dir, folders[scale], splits, type_pattern_features(splits, scale=scale))
    folders[None] = folders[1.0]  # the text-only model reads no features
    os.makedirs(os.path.join(work_dir, "runs"), exist_ok=True)
    jobs, cells = [], {}
    for model, slug, scale, flags in models:  # model by model, both readers of a seed together, so that an
        for seed in seeds:                     # experiment stopped early has whole rows and pairs
            for reader, reader_flags in READERS.items():
                folder = os.path.join(work_dir, "runs", f"{slug}_{reader}_{seed}")
                cells.setdefault((model, reader), []).append(folder)
                jobs.append((folder, main_command(folders[scale], folder, ["--seed", str(seed), "--threads", "1",
                                                                           "--released_scorer", *flags,
                                                                           *reader_flags])))
    run_commands(jobs, parallel)
    return experiment_table(cells)


def experiment_table(cells):
    """Markdown rows: per model and reader, test F1 of seqeval and of the authors' scorer (mean +- sample std over
    the finished seeds, then each seed's), the test tweets each scored, and the best epochs."""
    import statistics
    lines = ["| model | reader | test F1, seqeval | test F1, authors' scorer | per seed (seqeval / authors') | "
             "test tweets scored | best epochs |", "|---|---|---|---|---|---|---|"]
    for (model, reader), folders in cells.items():
        runs = []
        for folder in folders:
            if finished(folder):
                with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
                    runs.append(json.load(f))
        if not runs:
            lines.append(f"| {model} | {reader} | not run | | | | |")
            continue
        ours = [100 * m["test"]["f1"] for m in runs]
        theirs = [100 * m["test"]["authors_scorer"]["f1"] for m in runs]

        def spread(values):
            return f"{statistics.mean(values):.2f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"
        lines.append(f"| {model} | {reader} | {spread(ours)} | {spread(theirs)} | "
                     + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(ours, theirs))
                     + f" | {runs[0]['test']['tweets']} / {runs[0]['test']['authors_scorer']['tweets']} | "
                     + ", ".join(str(m["best_epoch"]) for m in runs) + f" ({len(runs)} of {len(folders)} seeds) |")
    return lines
