"""`bench.py --baseline_dir`: this checkout's speed against other checkouts of the project (e.g. the code before a
change, `git worktree add /tmp/base <commit>`), each measured the same way in its own child process, back to back,
round after round (A, B, A, B, ...), so that a busy machine slows them alike.

Each checkout reads the synthetic features in the layout its own save_vgg_feature.py writes (bench.prepare makes
both): the stacked layout where its image_features module has save_features, the per-image one before.

Measured per checkout: training throughput of the paper's architecture (batch 16, Adam) and of the authors'
(batch 10, RMSprop), steady state on the real Twitter-2015 text with bench.py's synthetic features; and the
complete default run (`main.py --do_train --do_eval --no_w2v`): its wall time, the time spent inside training
steps (trainer.train_step, timed from outside the checkout's code), the rest (start-up, data, evaluations,
outputs), peak anonymous memory and F1. The workers import only modules every checkout has, since before the redesign
(where data_loader read the features and model.py built the model): data_loader, trainer and model; main.py is
run as a program, not imported.
"""
import json
import os
import statistics
import subprocess
import sys
import time

TRAINING_WORKER = r"""
import json, os, sys, time
code_dir, data_dir, architecture, steps, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, code_dir)
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")  # as main.py does
import logging
import torch
if threads:
    torch.set_num_threads(threads)
logging.basicConfig(level=logging.ERROR)
import data_loader as data
import trainer
import model as model_module
from model import ModelConfig
try:
    import image_features
except ImportError:  # before the redesign (the code before issue 20), the features were read by data_loader
    image_features = data
build_model = getattr(trainer, "build_model", None) or model_module.build_model
splits = {name: data.read_split(name, os.path.join(data_dir, name)) for name in ("train", "dev", "test")}
ids = list(dict.fromkeys(i for split in splits.values() for i in split.img_ids))
features = image_features.load_image_features(os.path.join(data_dir, "img_vgg_features.pt"), ids)
tweets = [split.tweets for split in splits.values()]
if architecture == "paper":  # main.py's defaults; the authors' preset for the other
    vocab = data.build_vocab(tweets, splits["train"].tweets, 23204, 102, ["all"])
    examples = data.encode_tweets(splits["train"].tweets, vocab, 30, features, 35)
    batch_size, optimizer_name = 16, "adam"
else:
    vocab = data.build_vocab(tweets, splits["train"].tweets, 0, 0, ["all"], "raw")
    examples = data.encode_tweets(splits["train"].tweets, vocab, 30, features, 35, keep="last")
    batch_size, optimizer_name = 10, "rmsprop"
torch.manual_seed(7)
model = build_model(ModelConfig(len(vocab.words), len(vocab.chars), len(vocab.tags), architecture=architecture))
optimizer = trainer.make_optimizer(optimizer_name, model.parameters(), 1e-3)
def epochs(generator=torch.Generator().manual_seed(0)):
    while True:
        yield from data.batches(examples, batch_size, features, shuffle=True, generator=generator)
stream, warmup = epochs(), 10
batches = [next(stream) for _ in range(warmup + steps)]
model.train()
load = os.getloadavg()[0]
for i, batch in enumerate(batches):
    if i == warmup:
        start, cpu = time.perf_counter(), time.process_time()
    trainer.train_step(model, optimizer, batch)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"tweets_per_s": steps * batch_size / wall, "cpu_tweets_per_s": steps * batch_size / cpu,
                  "load": max(load, os.getloadavg()[0])}))
"""

PER_IMAGE_FOLDER = "float16-per-image"  # bench.prepare's folder whose feature file has the per-image layout

FULL_RUN_WORKER = r"""
import json, os, sys, time
code_dir, report = sys.argv[1], sys.argv[2]
sys.path.insert(0, code_dir)
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")  # main.py's setting, before torch loads
import trainer
spent = {"seconds": 0.0, "steps": 0}
train_step = trainer.train_step
def timed_train_step(*args, **kwargs):
    start = time.perf_counter()
    try:
        return train_step(*args, **kwargs)
    finally:
        spent["seconds"] += time.perf_counter() - start
        spent["steps"] += 1
trainer.train_step = timed_train_step  # trainer.train looks it up at each step
import runpy
sys.argv = [os.path.join(code_dir, "main.py"), *sys.argv[3:]]
try:  # the script run as `python main.py ...` (not imported), with trainer.train_step timed
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as stop:
    code = stop.code
with open(report, "w", encoding="utf-8") as f:
    json.dump(spent, f)
sys.exit(code)
"""


def run_worker(script, code_dir, args):
    """Run a worker script in a child process from `code_dir`; returns its last stdout line, parsed as JSON."""
    result = subprocess.run([sys.executable, "-c", script, code_dir, *map(str, args)], cwd=code_dir, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def data_folder(code_dir, work_dir):
    """bench.prepare's float16 data folder in the feature layout the checkout in `code_dir` writes: the stacked one
    where its image_features.py defines save_features, the per-image one before (or with no image_features.py: the
    code before the redesign, whose data_loader read the features)."""
    source = os.path.join(code_dir, "image_features.py")
    stacked = os.path.isfile(source) and "\ndef save_features(" in open(source, encoding="utf-8").read()
    return os.path.join(work_dir, "float16" if stacked else PER_IMAGE_FOLDER)


def training_throughput(code_dir, data_dir, architecture, steps, threads):
    return run_worker(TRAINING_WORKER, code_dir, [data_dir, architecture, steps, threads or 0])


def full_run(code_dir, data_dir, model_dir, threads):
    """The complete default run of the checkout in `code_dir`, as a user types it (plus --offline and
    --no_progress): wall seconds from the parent, seconds inside training steps, and its metrics.json."""
    report = model_dir + ".steps.json"
    command = [sys.executable, "-c", FULL_RUN_WORKER, code_dir, report, "--do_train", "--do_eval", "--no_w2v",
               "--offline", "--no_progress", "--data_dir", data_dir, "--model_dir", model_dir,
               *(["--threads", str(threads)] if threads else [])]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, cwd=code_dir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(report, encoding="utf-8") as f:
        steps = json.load(f)
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    return {"wall": wall, "training": steps["seconds"], "steps": steps["steps"], "metrics": metrics,
            "load": max(load, os.getloadavg()[0])}


def median(runs, key):
    return statistics.median(run[key] for run in runs)


def load_range(runs):
    loads = [run["load"] for run in runs]
    return f"{min(loads):.1f}-{max(loads):.1f}"


def compare(versions, work_dir, steps, rounds, threads, with_full_run=True):
    """Rows of bench.py's table: for each measure, every checkout of `versions` (label, folder; the first is the
    reference, the last this one), the median over `rounds` back-to-back rounds, and the speed-up of each against
    the first. `work_dir` holds bench.prepare's data folders."""
    data_dirs = {label: data_folder(code_dir, work_dir) for label, code_dir in versions}
    training = {(label, arch): [] for label, _ in versions for arch in ("paper", "authors")}
    runs = {label: [] for label, _ in versions}
    for round_ in range(rounds):
        for architecture, arch_steps in (("paper", steps), ("authors", max(10, steps // 2))):
            for label, code_dir in versions:
                training[label, architecture].append(
                    training_throughput(code_dir, data_dirs[label], architecture, arch_steps, threads))
        if with_full_run:
            for i, (label, code_dir) in enumerate(versions):
                runs[label].append(full_run(code_dir, data_dirs[label], os.path.join(work_dir, f"run_{i}_{round_}"),
                                            threads))
    reference = versions[0][0]
    rows = [("checkouts compared (medians of back-to-back rounds)",
             "; ".join(f"{label} = {folder}" for label, folder in versions) + f"; {rounds} rounds"),
            ("feature layout each checkout reads (the one its save_vgg_feature.py writes)",
             ", ".join(f"{label} {'per-image' if data_dirs[label].endswith(PER_IMAGE_FOLDER) else 'stacked'}"
                       for label, _ in versions))]

    def add(name, values, better="higher", unit=""):
        """One row per measure: each checkout's value, and its ratio to the reference (speed-up, or x less)."""
        cells = []
        for label, _ in versions:
            value = values[label]
            ratio = values[reference] / value if better == "lower" else value / values[reference]
            cells.append(f"{label} {value:.2f}{unit}" + ("" if label == reference else f" ({ratio:.2f}x)"))
        rows.append((name, ", ".join(cells)))

    for architecture, batch in (("paper", "batch 16, Adam"), ("authors", "batch 10, RMSprop")):
        add(f"training throughput, {architecture} (tweets/s, {batch})",
            {label: median(training[label, architecture], "tweets_per_s") for label, _ in versions})
        add("same, per second of CPU time (tweets/s)",
            {label: median(training[label, architecture], "cpu_tweets_per_s") for label, _ in versions})
    for label, _ in versions:
        paper, authors = (median(training[label, arch], "tweets_per_s") for arch in ("paper", "authors"))
        rows.append((f"{label}: authors' throughput / paper's", f"{authors / paper:.2f}"))
    if with_full_run:
        add("complete default run: wall (s)", {label: median(runs[label], "wall") for label, _ in versions},
            better="lower")
        add("same: inside training steps (s)", {label: median(runs[label], "training") for label, _ in versions},
            better="lower")
        add("same: everything else (s): start-up, data, evaluations, outputs",
            {label: statistics.median(r["wall"] - r["training"] for r in runs[label]) for label, _ in versions},
            better="lower")
        add("same: peak anonymous memory (GB)",
            {label: statistics.median(r["metrics"]["peak_anonymous_memory_gb"] for r in runs[label])
             for label, _ in versions}, better="lower")
        for label, _ in versions:
            each = [f"{r['wall']:.1f} / {r['wall'] - r['training']:.1f}" for r in runs[label]]
            rows.append((f"{label}: wall / everything else of each round (s)", ", ".join(each)))
        for label, _ in versions:
            f1 = [f"{100 * r['metrics']['dev']['f1']:.2f} / {100 * r['metrics']['test']['f1']:.2f}" for r in runs[label]]
            rows.append((f"{label}: dev / test F1 of each round (seed 7)", ", ".join(f1)))
    every_run = [run for values in training.values() for run in values] + [r for v in runs.values() for r in v]
    rows.append(("load average (1 min) during the measurements", load_range(every_run)))
    return rows
