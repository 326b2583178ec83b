"""Speed and memory benchmark of ACN on the real Twitter-2015 text with synthetic full-size image features.

    python bench.py --data_dir ../shared/data/twitter2015
    python bench.py --pathway   # the image-pathway experiment (pathway.py; paper 3 epochs, authors 12)
    python bench.py --pathway --pathway_scale 0.1   # the same with the features scaled by 0.1
    python bench.py --released_pairing_experiment   # the released reader's pairing against the files' own
    python bench.py --baseline_dir /tmp/base        # this checkout against another one (compare.py)

Prints one table: training throughput (tweets/s, steady state) of both architectures, evaluation throughput,
tagging throughput of raw tweets (tokenising, and with images a random-weight VGG16 on the fly), the wall time,
peak resident and peak anonymous memory of the complete default run (`main.py --do_train --do_eval --no_w2v`, run
as a child process), and one training step of our co-attention against the literal `.repeat()` + concat
formulation of the same equations (reference_model.py). On CUDA too when a GPU is present.

With --baseline_dir (one or more other checkouts of the project, e.g. the code before a change made with
`git worktree add /tmp/base <commit>`), it prints instead the comparison of compare.py: training throughput of both
architectures and the complete default run, every checkout measured back to back in child processes, with the
speed-up of this one (and of each further baseline) against the first.
"""
import argparse
import logging
import os
import random
import shutil
import tempfile
import time

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")  # as main.py does

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import data_loader as data  # noqa: E402
import image_features  # noqa: E402
import predict  # noqa: E402
import raw_tweets  # noqa: E402
import trainer  # noqa: E402
import vgg  # noqa: E402
import compare  # noqa: E402
from model import ACN, ModelConfig  # noqa: E402
from model_authors import AuthorsACN  # noqa: E402
from flags import seed_list  # noqa: E402
from pathway import full_run, pathway, released_pairing_experiment  # noqa: E402
from reference_model import LiteralACN  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))



# ----------------------------------------------------------------------------------------------------------------

def prepare(data_dir, work_dir):
    """Data folders in `work_dir`, each with the three files and the same synthetic features: float16/ and float32/
    in the layout save_vgg_feature.py writes (stacked), float16-per-image/ in the per-image layout of the published
    file (and of earlier versions of this code, which compare.py gives it). Returns the splits and the float16
    features, opened as main.py opens them."""
    splits = {name: data.read_split(name, os.path.join(data_dir, name)) for name in ("train", "dev", "test")}
    ids = list(dict.fromkeys(i for split in splits.values() for i in split.img_ids))
    features = None
    for folder_name, dtype, stacked in (("float32", "float32", True), ("float16", "float16", True),
                                        (compare.PER_IMAGE_FOLDER, "float16", False)):
        folder = os.path.join(work_dir, folder_name)
        os.makedirs(folder, exist_ok=True)
        for name in splits:
            shutil.copy(os.path.join(data_dir, name), os.path.join(folder, name))
        path = os.path.join(folder, "img_vgg_features.pt")
        if not os.path.isfile(path):
            features = features or image_features.synthetic_features(ids)
            typed = {img_id: regions.to(getattr(torch, dtype)) for img_id, regions in features.items()}
            if stacked:
                image_features.save_features(typed, path, provenance=None)
            else:
                torch.save(typed, path)
    del features
    return splits, image_features.load_image_features(os.path.join(work_dir, "float16", "img_vgg_features.pt"), ids)


def time_training(model, examples, features, device, steps, batch_size=16, warmup=10, optimizer="adam"):
    optimizer = trainer.make_optimizer(optimizer, model.parameters(), 1e-3)  # as main.py trains
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


def time_raw_tagging(model, vocab, records, extractor, device):
    """Tweets per second from raw text (tokenised) to tags, with the images' features extracted on the fly when
    `extractor` is given: main.py's --do_predict path for a JSONL file."""
    start = time.perf_counter()
    tweets = raw_tweets.to_tweets([raw_tweets.record_from_text(r.text, r.image, r.id) for r in records])
    features = predict.raw_features(records, extractor)[0]  # zero features for tweets without an image
    examples = data.encode_tweets(tweets, vocab, 30, features)
    trainer.predict(model, examples, len(tweets), vocab, features, 32, device, progress=False)
    sync(device)
    return len(records) / (time.perf_counter() - start)


def raw_records(split, work_dir, with_images, count=64):
    """`count` raw tweets rebuilt from the test file's tokens, each with a drawn 500 x 375 JPEG when asked."""
    records = []
    folder = os.path.join(work_dir, "raw_images")
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(0)
    for i, tweet in enumerate(split.tweets[:count]):
        image = None
        if with_images:
            image = os.path.join(folder, f"{i}.jpg")
            Image.new("RGB", (500, 375), tuple(rng.randrange(256) for _ in range(3))).save(image)
        records.append(raw_tweets.record_from_text(" ".join(tweet.tokens), image, str(i)))
    return records


def throughput_rows(args, work_dir):
    splits, features = prepare(args.data_dir, work_dir)
    vocab = data.build_vocab([s.tweets for s in splits.values()], splits["train"].tweets, 23204, 102, ["all"])
    raw_vocab = data.build_vocab([s.tweets for s in splits.values()], splits["train"].tweets, 0, 0, ["all"], "raw")
    train = data.encode_tweets(splits["train"].tweets, vocab, 30, features, 35)
    raw_train = data.encode_tweets(splits["train"].tweets, raw_vocab, 30, features, 35, keep="last")
    splits["test"].examples = data.encode_tweets(splits["test"].tweets, vocab, 30, features)
    config = ModelConfig(len(vocab.words), len(vocab.chars), len(vocab.tags))
    authors_config = ModelConfig(len(raw_vocab.words), len(raw_vocab.chars), len(raw_vocab.tags),
                                 architecture="authors")
    torch.manual_seed(7)
    pipeline = vgg.Extractor(vgg.VGG16Features(), "torchvision")  # random weights: the cost, not the values

    rows = [("machine", f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads")]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        torch.manual_seed(7)
        ours = time_training(ACN(config).to(device), train, features, device, args.steps)
        torch.manual_seed(7)
        literal = time_training(LiteralACN(config).to(device), train, features, device, max(10, args.steps // 4))
        torch.manual_seed(7)
        authors = time_training(AuthorsACN(authors_config).to(device), raw_train, features, device,
                                max(10, args.steps // 2), batch_size=10, optimizer="rmsprop")
        model = ACN(config).to(device)
        evaluation = time_evaluation(model, splits["test"], vocab, features, device)
        pipeline.model.to(device)
        pipeline.device = device
        text_only = time_raw_tagging(model, vocab, raw_records(splits["test"], work_dir, False), None, device)
        with_images = time_raw_tagging(model, vocab, raw_records(splits["test"], work_dir, True), pipeline, device)
        rows += [(f"{device.type}: training throughput, paper architecture (tweets/s, batch 16)", f"{ours:.0f}"),
                 (f"{device.type}: same step, literal .repeat() co-attention (tweets/s)", f"{literal:.0f}"),
                 (f"{device.type}: speed-up of the factored co-attention step", f"{ours / literal:.2f}x"),
                 (f"{device.type}: training throughput, authors architecture (tweets/s, batch 10, RMSprop)",
                  f"{authors:.0f}"),
                 (f"{device.type}: evaluation throughput (tweets/s, batch 32, test)", f"{evaluation:.0f}"),
                 (f"{device.type}: raw tweets tagged, text only (tweets/s, tokenising included)", f"{text_only:.0f}"),
                 (f"{device.type}: raw tweets tagged, each with a 500 x 375 JPEG through VGG16 (tweets/s)",
                  f"{with_images:.1f}")]
    if not args.skip_full_run:
        runs = [("cpu", "float16", ["--no_cuda"])]
        if torch.cuda.is_available():
            runs.append(("cuda", "float16", []))
        if not args.skip_float32_run:
            runs.append(("cpu", "float32", ["--no_cuda"]))
        for label, dtype, flags in runs:
            wall, metrics = full_run(os.path.join(work_dir, dtype), flags + (["--threads", str(args.threads)]
                                                                             if args.threads else []))
            name = f"{label}, {dtype} features: complete default run"
            rows += [(f"{name}, wall (s)", f"{wall:.1f}"),
                     (f"{name}, peak anonymous memory RssAnon (GB)", f"{metrics['peak_anonymous_memory_gb']:.2f}"),
                     (f"{name}, peak resident memory VmHWM (GB)", f"{metrics['peak_memory_gb']:.2f}"),
                     (f"{name}, dev / test F1 (seed 7, synthetic features)",
                      f"{100 * metrics['dev']['f1']:.2f} / {100 * metrics['test']['f1']:.2f}")]
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=os.environ.get("TWITTER2015_DIR", "../shared/data/twitter2015"),
                   help="folder with the Twitter-2015 train/dev/test files")
    p.add_argument("--work_dir", default=None, help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--steps", type=int, default=100, help="timed training steps per device")
    p.add_argument("--skip_full_run", action="store_true", help="only the throughput rows")
    p.add_argument("--skip_float32_run", action="store_true", help="no second full run with float32 features")
    p.add_argument("--baseline_dir", action="append", default=[], metavar="DIR",
                   help="another checkout of the project to compare this one with, back to back (repeatable: the "
                        "first is the reference, e.g. the code before a change; `git worktree add DIR <commit>`)")
    p.add_argument("--rounds", type=int, default=2, help="with --baseline_dir: back-to-back rounds (medians reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every measurement (default: torch's own; 1 on a busy machine)")
    p.add_argument("--pathway", action="store_true", help="run the image-pathway experiment instead")
    p.add_argument("--pathway_epochs", type=int, default=3, help="training epochs of the pathway runs of `paper`")
    p.add_argument("--pathway_authors_epochs", type=int, default=12,
                   help="training epochs of the pathway runs of `authors` (under --preset authors)")
    p.add_argument("--pathway_scale", type=float, default=1.0,
                   help="multiply the pathway features by this (the authors' model reads raw, unnormalised regions)")
    p.add_argument("--released_pairing_experiment", action="store_true", help="train the pathway models under the "
                   "released reader's pairing and under the files' own, --experiment_seeds each (paper "
                   "--pathway_epochs, authors --pathway_authors_epochs on the features x 0.1), and print test F1 of "
                   "seqeval and of the authors' scorer; runs stay in --work_dir, and a finished run is not run again")
    p.add_argument("--experiment_seeds", type=seed_list, default=[7, 8, 9], help="seeds of the experiment")
    p.add_argument("--parallel", type=int, default=2, help="experiment runs at a time (one thread each)")
    args = p.parse_args()
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="acn-bench-")
    logging.basicConfig(level=logging.ERROR)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.released_pairing_experiment:
        print("\n".join(released_pairing_experiment(args.data_dir, work_dir, args.pathway_epochs,
                                                    args.pathway_authors_epochs, args.experiment_seeds,
                                                    args.parallel)))
        rows = []
    elif args.pathway:
        rows = pathway(args.data_dir, work_dir, args.pathway_epochs, args.pathway_authors_epochs, args.pathway_scale)
    elif args.baseline_dir:
        prepare(args.data_dir, work_dir)
        versions = [(os.path.basename(os.path.abspath(folder)), os.path.abspath(folder))  # labelled by folder name
                    for folder in args.baseline_dir] + [("now", HERE)]
        labels = [label for label, _ in versions]
        if len(set(labels)) < len(labels):
            p.error(f"--baseline_dir folders are labelled by their names, which repeat: {labels}; name them apart")
        rows = [("machine", f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
                            f"{args.threads or torch.get_num_threads()} threads")]
        rows += compare.compare(versions, work_dir, args.steps, args.rounds,
                                args.threads, with_full_run=not args.skip_full_run)
    else:
        rows = throughput_rows(args, work_dir)
    if rows:
        width = max(len(name) for name, _ in rows)
        print(f"\n| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
        for name, value in rows:
            print(f"| {name:<{width}} | {value} |")
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
