"""Speed and memory benchmark of ACN on the real Twitter-2015 text with synthetic full-size image features.

    python bench.py --data_dir ../shared/data/twitter2015

Prints one table: training throughput (tweets/s, steady state), evaluation throughput, the wall time and peak
resident memory of the complete default run (`main.py --do_train --do_eval --no_w2v`, run as a child process),
and one training step of our co-attention against the literal `.repeat()` + concat formulation of the same
equations (tests/reference.py). On CUDA too when a GPU is present.
"""
import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")  # as main.py does

import torch  # noqa: E402

import data_loader as data  # noqa: E402
import trainer  # noqa: E402
from model import ACN, ModelConfig  # noqa: E402
from tests.reference import LiteralACN  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------------------------

def synthetic_features(img_ids, seed=0):
    """Full-size (49, 512) non-negative float32 features (like ReLU outputs) for every id; a stand-in for VGG16."""
    generator = torch.Generator().manual_seed(seed)
    return {img_id: torch.relu(torch.randn(49, 512, generator=generator)) for img_id in img_ids}


def prepare(data_dir, work_dir):
    """Two data folders in `work_dir`, float16/ and float32/, each with the three files and the same synthetic
    features stored in that dtype. Returns the splits and the float16 features, opened as main.py opens them."""
    splits = {name: data.read_split(name, os.path.join(data_dir, name)) for name in ("train", "dev", "test")}
    ids = list(dict.fromkeys(i for split in splits.values() for i in split.img_ids))
    features = None
    for dtype in ("float32", "float16"):
        folder = os.path.join(work_dir, dtype)
        os.makedirs(folder, exist_ok=True)
        for name in splits:
            shutil.copy(os.path.join(data_dir, name), os.path.join(folder, name))
        if not os.path.isfile(os.path.join(folder, "img_vgg_features.pt")):
            features = features or synthetic_features(ids)
            torch.save({k: v.to(getattr(torch, dtype)) for k, v in features.items()},
                       os.path.join(folder, "img_vgg_features.pt"))
    del features
    return splits, data.load_image_features(os.path.join(work_dir, "float16", "img_vgg_features.pt"), ids)


def time_training(model, examples, features, device, steps, batch_size=16, warmup=10):
    optimizer = trainer.make_optimizer("adam", model.parameters(), 1e-3)  # as main.py trains
    generator = torch.Generator().manual_seed(0)
    stream = data.batches(examples, batch_size, features, shuffle=True, generator=generator)
    batches = [next(stream) for _ in range(warmup + steps)]
    model.train()
    for i, batch in enumerate(batches):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        trainer.train_step(model, optimizer, batch.to(device))
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def time_evaluation(model, split, vocab, features, device, batch_size=32):
    """Tweets per second through trainer.predict, the path evaluation takes (Viterbi decoding, tags as strings)."""
    start = time.perf_counter()
    trainer.predict(model, split.examples, len(split.tweets), vocab, features, batch_size, device, progress=False)
    sync(device)
    return len(split.tweets) / (time.perf_counter() - start)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def full_run(work_dir, extra):
    """The complete default run as a user types it, in a child process: wall seconds, peak resident memory (GB, as
    main.py measured itself: VmHWM), metrics."""
    model_dir = os.path.join(work_dir, "model")
    command = [sys.executable, os.path.join(HERE, "main.py"), "--do_train", "--do_eval", "--no_w2v", "--offline",
               "--no_progress", "--data_dir", work_dir, "--model_dir", model_dir, *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    return wall, metrics["peak_memory_gb"], metrics


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=os.environ.get("TWITTER2015_DIR", "../shared/data/twitter2015"),
                   help="folder with the Twitter-2015 train/dev/test files")
    p.add_argument("--work_dir", default=None, help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--steps", type=int, default=100, help="timed training steps per device")
    p.add_argument("--skip_full_run", action="store_true", help="only the throughput rows")
    p.add_argument("--skip_float32_run", action="store_true", help="no second full run with float32 features")
    args = p.parse_args()
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="acn-bench-")
    logging.basicConfig(level=logging.ERROR)

    splits, features = prepare(args.data_dir, work_dir)
    vocab = data.build_vocab([s.tweets for s in splits.values()], splits["train"].tweets, 23204, 102, ["all"])
    train = data.encode_tweets(splits["train"].tweets, vocab, 30, features, 35)
    splits["test"].examples = data.encode_tweets(splits["test"].tweets, vocab, 30, features)
    config = ModelConfig(len(vocab.words), len(vocab.chars), len(vocab.tags))

    rows = [("machine", f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads")]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        torch.manual_seed(7)
        ours = time_training(ACN(config).to(device), train, features, device, args.steps)
        torch.manual_seed(7)
        literal = time_training(LiteralACN(config).to(device), train, features, device, max(10, args.steps // 4))
        evaluation = time_evaluation(ACN(config).to(device), splits["test"], vocab, features, device)
        rows += [(f"{device.type}: training throughput (tweets/s, batch 16)", f"{ours:.0f}"),
                 (f"{device.type}: same step, literal .repeat() co-attention (tweets/s)", f"{literal:.0f}"),
                 (f"{device.type}: speed-up of the factored co-attention step", f"{ours / literal:.2f}x"),
                 (f"{device.type}: evaluation throughput (tweets/s, batch 32, test)", f"{evaluation:.0f}")]
    if not args.skip_full_run:
        runs = [("cpu", "float16", ["--no_cuda"])]
        if torch.cuda.is_available():
            runs.append(("cuda", "float16", []))
        if not args.skip_float32_run:
            runs.append(("cpu", "float32", ["--no_cuda"]))
        for label, dtype, flags in runs:
            wall, peak, metrics = full_run(os.path.join(work_dir, dtype), flags)
            rows.append((f"{label}, {dtype} features: complete default run, wall (s)", f"{wall:.1f}"))
            rows.append((f"{label}, {dtype} features: complete default run, peak resident memory (GB)", f"{peak:.2f}"))
            rows.append((f"{label}, {dtype} features: dev / test F1 (seed 7, synthetic features)",
                         f"{100 * metrics['dev']['f1']:.2f} / {100 * metrics['test']['f1']:.2f}"))
    width = max(len(name) for name, _ in rows)
    print(f"\n| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
