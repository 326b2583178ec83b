"""Train and evaluate the Adaptive Co-attention Network (Zhang et al., AAAI 2018) on Twitter-2015.

    python main.py --do_train --do_eval                 # train, keep the best dev checkpoint, score it on test
    python main.py --do_eval                            # score the checkpoint in --model_dir again
    python main.py --do_predict --pred_file tweets.txt  # tag a file with that checkpoint
"""
import os

# oneDNN caches a compiled kernel for every new tensor shape (up to 1024); batches padded to their own length make
# many shapes, and the cache grew the process by ~200 MB in a run. A small cache costs no measurable speed.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import argparse  # noqa: E402 - after the environment setting above, which must precede torch's first use
import dataclasses
import json
import logging
import platform
import sys
import time

import torch

import data_loader as data
import resources
import trainer
import utils
from model import ACN, ModelConfig

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Arguments: impossible values stop here, before any data is read.

def int_at_least(minimum):
    """argparse type: an integer >= minimum."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def int_list(text):
    message = f"expected comma-separated positive integers such as 2,3,4, got {text!r}"
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(message)
    return values


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    # what to do
    a("--do_train", action="store_true", help="train on --train_file, keep the best checkpoint on --dev_file")
    a("--do_eval", action="store_true", help="score the best checkpoint on --dev_file and --test_file")
    a("--do_predict", action="store_true", help="tag --pred_file with the best checkpoint")
    a("--pred_file", help="IMGID-CoNLL file to tag with --do_predict (tags optional; scored when present)")
    a("--pred_output", help="where --do_predict writes (default: <model_dir>/<pred_file name>.predicted)")
    a("--save_attention", action="store_true", help="with --do_predict: a PNG of each word's visual attention "
      "(7 x 7 grid) per tweet in <model_dir>/attention/, over the image when --img_dir has it")
    a("--img_dir", default=None, help="image folder inside --data_dir (for --save_attention; default: the data "
      "set's, " + ", ".join(f"{d.img_dir} for {name}" for name, d in resources.DATASETS.items()) + ")")
    a("--attention_limit", type=positive_int, default=20, help="--save_attention draws the first N tweets")
    a("--seeds", type=int_list, default=None, help="run --do_train --do_eval once per seed (e.g. 7,8,9) into "
      "<model_dir>/seed_<s>/ and summarise in <model_dir>/results.md and results.json")
    # where things are
    a("--dataset", choices=list(resources.DATASETS), default="twitter2015", help="which data set: sets the "
      "defaults of --data_dir, the split file names and --img_dir, and where missing files are downloaded from")
    a("--data_dir", default=None, help="folder with the train/dev/test files and the image-feature file "
      "(default: ./data/<dataset>)")
    a("--model_dir", default="./model", help="where the checkpoint, config.json, metrics.json and predictions go")
    a("--wordvec_dir", default="./wordvec", help="folder of the pretrained word-vector file")
    a("--vocab_dir", default="./vocab", help="where the vocabulary is written (training) and read (evaluation)")
    a("--train_file", default=None, help="training file name inside --data_dir (default: the data set's, "
      "train or train.txt)")
    a("--dev_file", default=None, help="development file name inside --data_dir (default: dev or valid.txt)")
    a("--test_file", default=None, help="test file name inside --data_dir (default: test or test.txt)")
    a("--w2v_file", default="word_vector_200d.vec", help="word vectors inside --wordvec_dir (GloVe/word2vec text)")
    a("--img_feature_file", default="img_vgg_features.pt",
      help="image id -> (49, 512) VGG16 pool5 features inside --data_dir (save_vgg_feature.py writes it)")
    a("--offline", action="store_true", help="never download a missing file; stop with a message instead")
    # data sizes
    a("--max_seq_len", type=positive_int, default=35, help="tweets are truncated to this many words for training "
      "only; evaluation and prediction tag every token")
    a("--max_word_len", type=positive_int, default=30, help="characters per word seen by the char CNN")
    a("--word_vocab_size", type=positive_int, default=23204, help="cap on the word vocabulary (with [PAD], [UNK])")
    a("--char_vocab_size", type=positive_int, default=102, help="cap on the char vocabulary (with [PAD], [UNK])")
    a("--vocab_from", choices=["all", "train"], default="all", help="build the vocab from train+dev+test as the "
      "paper's code does (all), or from train only (a stricter protocol)")
    # model
    a("--word_emb_dim", type=positive_int, default=200, help="word embedding size")
    a("--char_emb_dim", type=positive_int, default=30, help="character embedding size")
    a("--final_char_dim", type=positive_int, default=50, help="size of the char-CNN word representation")
    a("--hidden_dim", type=positive_int, default=200, help="BiLSTM output size k (k/2 per direction); must be even")
    a("--kernel_lst", type=int_list, default=[2, 3, 4], help="char-CNN kernel widths, comma-separated")
    a("--num_filters", type=positive_int, default=32, help="char-CNN filters per kernel width")
    a("--attention", choices=["concat", "additive"], default="concat", help="concat: the paper's equations; "
      "additive: w.tanh(W_v v + W_h h + b), where the word conditions the attention")
    a("--no_img", action="store_true", help="text-only ablation (BiLSTM-CNN-CRF): no image features needed")
    a("--no_w2v", action="store_true", help="random word embeddings (uniform +-0.25) instead of --w2v_file")
    # training
    a("--seed", type=int, default=7, help="random seed")
    a("--train_batch_size", type=positive_int, default=16, help="tweets per training step")
    a("--eval_batch_size", type=positive_int, default=32, help="tweets per evaluation batch")
    a("--optimizer", choices=["adam", "rmsprop"], default="adam", help="optimizer")
    a("--learning_rate", type=positive_float, default=0.001, help="learning rate")
    a("--num_train_epochs", type=positive_int, default=5, help="training epochs")
    a("--logging_steps", type=non_negative_int, default=0, help="also evaluate dev every N steps (0: per epoch only)")
    a("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    a("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's choice)")
    a("--no_progress", action="store_true", help="no tqdm progress bars")
    a("--verbose", action="store_true", help="debug logging (lists, e.g., image ids without features)")
    return p


def resolve_dataset_defaults(args):
    """Fill the flags left unset (None) with the defaults of --dataset; flags given explicitly win."""
    dataset = resources.DATASETS[args.dataset]
    defaults = {"data_dir": dataset.data_dir, "img_dir": dataset.img_dir,
                **dict(zip(["train_file", "dev_file", "test_file"], dataset.split_files))}
    for flag, value in defaults.items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    return args


def parse_args(argv=None):
    parser = build_parser()
    args = resolve_dataset_defaults(parser.parse_args(argv))
    if not (args.do_train or args.do_eval or args.do_predict):
        parser.error("nothing to do: give --do_train, --do_eval and/or --do_predict")
    if args.hidden_dim % 2:
        parser.error(f"argument --hidden_dim: must be even (two LSTM directions of k/2), got {args.hidden_dim}")
    if args.word_vocab_size < 3 or args.char_vocab_size < 3:
        parser.error("arguments --word_vocab_size/--char_vocab_size: must leave room for [PAD], [UNK] and one entry")
    if args.do_predict and not args.pred_file:
        parser.error("--do_predict needs --pred_file")
    if args.save_attention and (args.no_img or not args.do_predict):
        parser.error("--save_attention needs --do_predict and the image model (not --no_img)")
    if args.seeds and not (args.do_train and args.do_eval):
        parser.error("--seeds needs --do_train and --do_eval")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Files: found locally, or downloaded from their public location when they have one.

def resource_path(path, url, check, avoid_hint, offline):
    """Return `path`, downloading it from `url` first if it is missing (and a URL is known)."""
    if os.path.isfile(path) or url is None:
        return path
    if offline:
        raise utils.DownloadError(f"{path} is missing and --offline forbids downloading it from {url}.\n"
                                  f"  Put the file there, or: {avoid_hint}")
    return utils.download(url, path, check=check, avoid_hint=avoid_hint)


def data_path(args, file_name):
    url = resources.DATASETS[args.dataset].file_url(file_name)
    return resource_path(os.path.join(args.data_dir, file_name), url, lambda p: data.read_tweets(p),
                         f"point --data_dir at a folder that holds the {args.dataset} files", args.offline)


def feature_path(args):
    path = os.path.join(args.data_dir, args.img_feature_file)
    default_name = args.img_feature_file == resources.VGG_FEATURES_FILE
    url = resources.DATASETS[args.dataset].feature_url if default_name else None
    hint = (f"extract features from the images with `python save_vgg_feature.py --dataset {args.dataset} "
            f"--data_dir {args.data_dir}`, or train text-only with --no_img")
    if url is None and not os.path.isfile(path):
        raise utils.DownloadError(f"{path} is missing and has no public copy to download.\n  To fix: {hint}")
    return resource_path(path, url, utils.check_torch_zip, hint, args.offline)


def wordvec_path(args):
    url = resources.WORD_VECTORS_URL if args.w2v_file == resources.WORD_VECTORS_FILE else None
    return resource_path(os.path.join(args.wordvec_dir, args.w2v_file), url, utils.check_text_lines,
                         "train with random word embeddings: --no_w2v", args.offline)


# ----------------------------------------------------------------------------------------------------------------

def model_config(args, vocab):
    return ModelConfig(num_words=len(vocab.words), num_chars=len(vocab.chars), num_tags=len(vocab.tags),
                       word_emb_dim=args.word_emb_dim, char_emb_dim=args.char_emb_dim,
                       final_char_dim=args.final_char_dim, kernel_sizes=tuple(args.kernel_lst),
                       num_filters=args.num_filters, hidden_dim=args.hidden_dim, use_image=not args.no_img,
                       attention=args.attention)


def run(args):
    utils.init_logger(args.verbose)
    utils.set_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    logger.info("Device: %s", device)
    wall_start = time.time()

    # 1. Data files and vocabulary
    names = {"train": args.train_file, "dev": args.dev_file, "test": args.test_file}
    needed = ["train", "dev", "test"] if args.do_train or args.do_eval else []
    splits = {name: data.read_split(name, data_path(args, names[name])) for name in needed}
    if args.do_predict:
        splits["predict"] = data.read_split("predict", args.pred_file)
    if args.do_train:
        sources = ["train", "dev", "test"] if args.vocab_from == "all" else ["train"]
        vocab = data.build_vocab([splits[s].tweets for s in sources], splits["train"].tweets,
                                 args.word_vocab_size, args.char_vocab_size, sources)
        vocab.save(args.vocab_dir)
        logger.info("Vocab from %s: %d words, %d chars, tags %s (written to %s)", "+".join(sources),
                    len(vocab.words), len(vocab.chars), vocab.tags, args.vocab_dir)
    else:
        vocab = data.Vocab.load(args.vocab_dir)
    for split in splits.values():
        if split.name != "train":
            data.check_tags_known(split.path, split.tweets, vocab)
    if args.do_train and not any(t != "O" for t in vocab.tags):
        logger.warning("%s has no entities: the model can only learn to predict O", splits["train"].path)

    # 2. Image features for every tweet of every split in use
    features = None
    if not args.no_img:
        all_ids = [img_id for split in splits.values() for img_id in split.img_ids]
        features = data.load_image_features(feature_path(args), all_ids)

    for split in splits.values():
        limit = args.max_seq_len if split.name == "train" else None  # only training truncates
        split.examples = data.encode_tweets(split.tweets, vocab, args.max_word_len, features, limit)

    config = model_config(args, vocab)
    os.makedirs(args.model_dir, exist_ok=True)
    checkpoint = os.path.join(args.model_dir, trainer.CHECKPOINT_FILE)
    metrics_path = os.path.join(args.model_dir, "metrics.json")
    metrics = {}
    if os.path.isfile(metrics_path) and not args.do_train:
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)

    # 3. Training
    if args.do_train:
        word_vectors = None
        if not args.no_w2v:
            word_vectors = data.load_word_vectors(wordvec_path(args), vocab, args.word_emb_dim, seed=args.seed)
        model = ACN(config, word_vectors).to(device)
        run_config = {**vars(args), "model_config": dataclasses.asdict(config), "device": str(device),
                      "torch": torch.__version__, "python": platform.python_version(),
                      "vocab": {"words": len(vocab.words), "chars": len(vocab.chars), "tags": vocab.tags,
                                "built_from": vocab.built_from},
                      "data": {name: dataclasses.asdict(split.stats) for name, split in splits.items()},
                      "missing_image_features": len(features.missing_ids) if features is not None else None}
        utils.atomic_write_text(os.path.join(args.model_dir, "config.json"), json.dumps(run_config, indent=2))
        summary = trainer.train(model, splits["train"].examples, splits["dev"], vocab, features,
                                model_dir=args.model_dir, optimizer_name=args.optimizer,
                                learning_rate=args.learning_rate, epochs=args.num_train_epochs,
                                batch_size=args.train_batch_size, eval_batch_size=args.eval_batch_size,
                                logging_steps=args.logging_steps, seed=args.seed, device=device,
                                progress=not args.no_progress)
        metrics = {"best_epoch": summary["best"]["epoch"], "best_step": summary["best"]["step"],
                   "dev": summary["best"]["dev"], "history": summary["history"],
                   "train_seconds": summary["train_seconds"], "interrupted": summary["interrupted"]}
        utils.atomic_write_text(metrics_path, json.dumps(metrics, indent=2))
        if summary["history"]:
            utils.plot_training_curve(summary["history"], os.path.join(args.model_dir, "training_curve.png"))
        if summary["interrupted"]:
            logger.warning("Training was interrupted; skipping evaluation. Evaluate the saved checkpoint with "
                           "--do_eval.")
            return 130

    # 4. Evaluation of the best checkpoint
    if args.do_eval or args.do_predict:
        model, saved = trainer.load_checkpoint(checkpoint, vocab, config, device)
        logger.info("Loaded %s (epoch %s, dev F1 %.2f)", checkpoint, saved["epoch"], 100 * saved["dev_f1"])
    if args.do_eval:
        for name in ("dev", "test"):
            result, predicted = trainer.evaluate(model, splits[name], vocab, features, args.eval_batch_size, device,
                                                 not args.no_progress)
            logger.info("\n%s", trainer.format_metrics(name, result))
            metrics[name] = result
            trainer.write_predictions(os.path.join(args.model_dir, f"{name}_predictions.txt"), splits[name].tweets,
                                      predicted)
        metrics["best_epoch"] = saved["epoch"]
        metrics["best_step"] = saved["step"]
        metrics["wall_seconds"] = round(time.time() - wall_start, 2)
        metrics["peak_memory_gb"] = round(utils.peak_memory_gb(), 3)
        utils.atomic_write_text(metrics_path, json.dumps(metrics, indent=2))
        logger.info("Wrote %s and the predictions to %s", metrics_path, args.model_dir)
    if args.do_predict:
        predict_file(args, model, splits["predict"], vocab, features, device)
    return 0


def predict_file(args, model, split, vocab, features, device):
    """Tag --pred_file; score it too when every token came with a tag."""
    predicted = trainer.predict(model, split.examples, len(split.tweets), vocab, features, args.eval_batch_size,
                                device, not args.no_progress)
    has_gold = split.stats.missing_tags == 0
    output = args.pred_output or os.path.join(args.model_dir, os.path.basename(args.pred_file) + ".predicted")
    trainer.write_predictions(output, split.tweets, predicted, with_gold=has_gold)
    no_feature = sum(1 for img_id in split.img_ids if features is not None and img_id not in features.row_of)
    logger.info("Tagged %d tweets (%d tokens) of %s -> %s; %d tweets had no image feature (zero feature used)",
                len(split.tweets), split.stats.tokens, split.path, output, no_feature)
    if has_gold:
        result = trainer.score([t.tags for t in split.tweets], predicted)
        logger.info("\n%s", trainer.format_metrics(os.path.basename(args.pred_file), result))
        utils.atomic_write_text(output + ".metrics.json", json.dumps(result, indent=2))
    if args.save_attention:
        save_attention_maps(args, model, split, features, device)
    return output


def save_attention_maps(args, model, split, features, device):
    """<model_dir>/attention/<n>_<img_id>.png for the first --attention_limit tweets of the file."""
    from PIL import Image
    from save_vgg_feature import find_image
    folder = os.path.join(args.model_dir, "attention")
    model.eval()
    for example in split.examples[:args.attention_limit]:
        tweet = split.tweets[example.index]
        with torch.no_grad():
            _, maps = model(data.collate([example], features).to(device))
        image_path = find_image(os.path.join(args.data_dir, args.img_dir), tweet.img_id)
        path = os.path.join(folder, f"{example.index}_{tweet.img_id}.png")
        if image_path:
            with Image.open(image_path) as image:
                utils.plot_visual_attention(tweet.tokens, maps["visual"][0].cpu(), path, image)
        else:
            utils.plot_visual_attention(tweet.tokens, maps["visual"][0].cpu(), path)
    logger.info("Wrote %d attention maps to %s", min(len(split.examples), args.attention_limit), folder)


def run_seeds(args):
    """The same configuration under several seeds: <model_dir>/seed_<s>/, then results.md and results.json."""
    import statistics
    per_seed = []
    for seed in args.seeds:
        seed_args = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None,
                                          "model_dir": os.path.join(args.model_dir, f"seed_{seed}")})
        code = run(seed_args)
        if code != 0:
            return code
        with open(os.path.join(seed_args.model_dir, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        per_seed.append({"seed": seed, "best_epoch": metrics["best_epoch"],
                         **{f"{split}_{m}": metrics[split][m] for split in ("dev", "test")
                            for m in ("precision", "recall", "f1")}})
    keys = [k for k in per_seed[0] if k.startswith(("dev_", "test_"))]
    summary = {k: {"mean": statistics.mean(r[k] for r in per_seed),
                   "std": statistics.stdev(r[k] for r in per_seed) if len(per_seed) > 1 else 0.0} for k in keys}
    configuration = {k: v for k, v in vars(args).items() if k not in ("seeds", "seed")}
    results = {"seeds": args.seeds, "per_seed": per_seed, "summary": summary, "configuration": configuration}
    utils.atomic_write_text(os.path.join(args.model_dir, "results.json"), json.dumps(results, indent=2))
    utils.atomic_write_text(os.path.join(args.model_dir, "results.md"), results_markdown(results))
    logger.info("\n%s", results_markdown(results))
    return 0


def results_markdown(results):
    """The multi-seed table: one row per seed, then mean +- std (sample standard deviation), in percent."""
    columns = ["dev_precision", "dev_recall", "dev_f1", "test_precision", "test_recall", "test_f1"]
    lines = ["| seed | best epoch | dev P | dev R | dev F1 | test P | test R | test F1 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["per_seed"]:
        lines.append(f"| {r['seed']} | {r['best_epoch']} | " + " | ".join(f"{100 * r[c]:.2f}" for c in columns) + " |")
    s = results["summary"]
    lines.append("| mean +- std | | " + " | ".join(f"{100 * s[c]['mean']:.2f} +- {100 * s[c]['std']:.2f}"
                                                  for c in columns) + " |")
    config = results["configuration"]
    changed = {k: v for k, v in config.items() if k in DEFAULTS and DEFAULTS[k] != v}
    lines += ["", f"Seeds {results['seeds']}; settings that differ from the defaults: "
              f"{json.dumps(changed) if changed else 'none'}."]
    return "\n".join(lines) + "\n"


DEFAULTS = vars(resolve_dataset_defaults(build_parser().parse_args([])))


def main(argv=None):
    args = parse_args(argv)
    try:
        return run_seeds(args) if args.seeds else run(args)
    except (data.DataError, trainer.CheckpointError, utils.DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
