"""Train and evaluate the Adaptive Co-attention Network (Zhang et al., AAAI 2018) on Twitter-2015 or Twitter-2017.

    python main.py --do_train --do_eval                 # train, keep the best dev checkpoint, score it on test
    python main.py --do_eval                            # score the checkpoint in --model_dir again
    python main.py --do_predict --pred_file tweets.txt  # tag a file with that checkpoint
"""
import os

# oneDNN caches a compiled kernel for every new tensor shape (up to 1024); batches padded to their own length make
# many shapes, and the cache grew the process by ~200 MB in a run. A small cache costs no measurable speed.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import argparse  # noqa: E402 - after the environment setting above, which must precede torch's first use
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import data_loader as data  # noqa: E402
import images  # noqa: E402
import resources  # noqa: E402
import save_vgg_feature  # noqa: E402
import trainer  # noqa: E402
import utils  # noqa: E402
from model import ModelConfig, build_model  # noqa: E402

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Arguments: impossible values stop here, before any data is read.

positive_int, non_negative_int = utils.int_at_least(1), utils.int_at_least(0)


def positive_float(text):
    """argparse type: a positive number that float32, the weights' type, can hold."""
    limit = torch.finfo(torch.float32).max
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if value > limit:
        raise argparse.ArgumentTypeError(f"expected a number up to {limit:.2g} (the weights are float32), got {text!r}")
    return value


def comma_ints(text, message, valid):
    """argparse helper: comma-separated integers that pass `valid(values)`, else `message`."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not valid(values):
        raise argparse.ArgumentTypeError(message)
    return values


def int_list(text):
    return comma_ints(text, f"expected comma-separated positive integers such as 2,3,4, got {text!r}",
                      lambda values: min(values) > 0)


def seed_list(text):
    return comma_ints(text, f"expected distinct comma-separated non-negative integers such as 7,8,9, got {text!r}",
                      lambda values: min(values) >= 0 and len(set(values)) == len(values))


PRESETS = {  # the authors' released setup (jinlanfu/NERmultimodal multimodal_ner.py; RMSprop as Keras 1.2's defaults)
    "authors": {"architecture": "authors", "optimizer": "rmsprop", "learning_rate": 0.001, "num_train_epochs": 25,
                "train_batch_size": 10, "max_seq_len": 35, "max_word_len": 30, "vocab_from": "all",
                "word_vocab_size": 0, "char_vocab_size": 0},  # every word and character of train+dev+test
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # every flag spelt out, so a run knows which flags were given
    a = p.add_argument
    # what to do
    a("--do_train", action="store_true", help="train on --train_file, keep the best checkpoint on --dev_file")
    a("--do_eval", action="store_true", help="score the best checkpoint on --dev_file and --test_file")
    a("--do_predict", action="store_true", help="tag --pred_file (or the one raw tweet of --text) with the best "
      "checkpoint")
    a("--pred_file", help="file to tag with --do_predict: IMGID-CoNLL (tags optional; scored when present), or raw "
      "tweets as JSONL (name ending in .jsonl; one {\"text\": ..., \"image\": path, \"id\": ...} per line)")
    a("--text", help="with --do_predict: tag this one raw tweet (instead of --pred_file); prints its JSON")
    a("--image", help="with --text: the tweet's image file")
    a("--vgg_weights", help="raw tweets with images: the VGG16 weights file that made the training features (as "
      "their provenance record names it); default: torchvision's cached checkpoint when that is the one")
    a("--image_pipeline", choices=save_vgg_feature.MODES, default=None, help="raw tweets with images, for a model "
      "whose training features have no provenance record: the save_vgg_feature.py --preprocess mode that made them "
      "(the published img_vgg_features.pt: seed, with torchvision's weights), with --vgg_weights for other weights")
    a("--pred_output", help="where --do_predict writes (default: <model_dir>/<pred_file name>.predicted, "
      "or .predicted.jsonl for raw tweets)")
    a("--save_attention", action="store_true", help="with --do_predict: a PNG of the visual attention (7 x 7 grid) "
      "per tweet in <model_dir>/attention/, over the image when --img_dir has it: one map per word with --attention "
      "additive, one map for the whole tweet with concat (where every word's map is the same)")
    a("--img_dir", default=None, help="image folder inside --data_dir (for --save_attention; default: the data "
      "set's, " + ", ".join(f"{d.img_dir} for {name}" for name, d in resources.DATASETS.items()) + ")")
    a("--attention_limit", type=positive_int, default=20, help="--save_attention draws the first N tweets")
    a("--seeds", type=seed_list, default=None, help="run --do_train --do_eval once per seed (e.g. 7,8,9) into "
      "<model_dir>/seed_<s>/ and summarise in <model_dir>/results.md and results.json")
    a("--summarise", nargs="+", metavar="RUN_DIR", default=None, help="instead of training: summarise finished "
      "single-seed runs (each the --model_dir of a --do_train --do_eval run, all with the same settings but the seed, "
      "e.g. run in parallel) into <model_dir>/results.md and results.json, as --seeds does")
    # where things are
    a("--dataset", choices=list(resources.DATASETS), default="twitter2015", help="which data set: sets the "
      "defaults of --data_dir, the split file names and --img_dir, and where missing files are downloaded from")
    a("--data_dir", default=None, help="folder with the train/dev/test files and the image-feature file "
      "(default: ./data/<dataset>)")
    a("--model_dir", default="./model", help="where the checkpoint, config.json, metrics.json and predictions go")
    a("--wordvec_dir", default="./wordvec", help="folder of the pretrained word-vector file")
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
    a("--word_vocab_size", type=non_negative_int, default=23204, help="cap on the word vocabulary (with [PAD], "
      "[UNK]); 0: every word")
    a("--char_vocab_size", type=non_negative_int, default=102, help="cap on the char vocabulary (with [PAD], "
      "[UNK]); 0: every character")
    a("--vocab_from", choices=["all", "train"], default="all", help="build the vocab from train+dev+test as the "
      "paper's code does (all: test words are in the vocabulary), or from train only (a stricter protocol)")
    # model
    a("--word_emb_dim", type=positive_int, default=200, help="word embedding size")
    a("--char_emb_dim", type=positive_int, default=30, help="character embedding size")
    a("--final_char_dim", type=positive_int, default=50, help="size of the char-CNN word representation")
    a("--hidden_dim", type=positive_int, default=200, help="BiLSTM output size k (k/2 per direction); must be even")
    a("--kernel_lst", type=int_list, default=[2, 3, 4], help="char-CNN kernel widths, comma-separated")
    a("--num_filters", type=positive_int, default=32, help="char-CNN filters per kernel width")
    a("--architecture", choices=["paper", "authors"], default="paper", help="paper: the equations of the paper; "
      "authors: the authors' released Keras model (two BiLSTMs, three-block char CNN, raw regions, front padding to "
      "--max_seq_len with no masking and a pad label, raw case-sensitive vocabulary); see README, 'The sources'")
    a("--preset", choices=list(PRESETS), default=None, help="authors: the released setup in one flag: "
      + ", ".join(f"--{k} {v}" for k, v in PRESETS["authors"].items()) + "; flags given explicitly win")
    a("--attention", choices=["concat", "additive"], default="concat", help="concat: the paper's equations; "
      "additive: w.tanh(W_v v + W_h h + b), where the word conditions the attention")
    a("--no_img", action="store_true", help="text-only ablation (BiLSTM-CNN-CRF): no image features needed")
    a("--no_w2v", action="store_true", help="random word embeddings (uniform +-0.25) instead of --w2v_file")
    # training
    a("--seed", type=non_negative_int, default=7, help="random seed")
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


def given_flags(argv):
    """The flags written on the command line (their dests), as opposed to those left at their defaults."""
    return sorted({token[2:].split("=", 1)[0] for token in argv if token.startswith("--")})


def apply_preset(args):
    """Set the values of --preset that the command line did not give; record what was set and what was kept."""
    args.preset_set, args.preset_kept = {}, {}
    for flag, value in PRESETS.get(args.preset, {}).items():
        if flag in args.given_flags:
            args.preset_kept[flag] = getattr(args, flag)
        else:
            setattr(args, flag, value)
            args.preset_set[flag] = value
    return args


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given_flags = given_flags(argv)
    args = apply_preset(resolve_dataset_defaults(args))
    if args.summarise and (args.do_train or args.do_eval or args.do_predict or args.seeds):
        parser.error("--summarise only reads finished runs: give it without --do_train/--do_eval/--do_predict/--seeds")
    if args.summarise and "model_dir" not in args.given_flags:
        parser.error("--summarise needs --model_dir: the folder for results.md and results.json")
    if not (args.do_train or args.do_eval or args.do_predict or args.summarise):
        parser.error("nothing to do: give --do_train, --do_eval, --do_predict and/or --summarise")
    if args.hidden_dim % 2:
        parser.error(f"argument --hidden_dim: must be even (two LSTM directions of k/2), got {args.hidden_dim}")
    if 0 < args.word_vocab_size < 3 or 0 < args.char_vocab_size < 3:
        parser.error("arguments --word_vocab_size/--char_vocab_size: must leave room for [PAD], [UNK] and one entry")
    if args.do_predict and not (args.pred_file or args.text is not None):
        parser.error("--do_predict needs --pred_file or --text")
    if args.pred_file and args.text is not None:
        parser.error("give --pred_file or --text, not both")
    if args.image_pipeline and not (args.text is not None or (args.pred_file or "").lower().endswith(".jsonl")):
        parser.error("--image_pipeline goes with --do_predict on raw tweets (--text, or a .jsonl --pred_file): it "
                     "says how to extract their images")
    if args.image and args.text is None:
        parser.error("--image goes with --text (in a JSONL --pred_file, give each tweet's \"image\")")
    if args.architecture == "authors" and (args.no_img or args.attention != "concat"):
        parser.error("--architecture authors has no text-only variant and uses the concat attention only: drop "
                     "--no_img/--attention, or use --architecture paper")
    if args.save_attention and (args.no_img or not args.do_predict):
        parser.error("--save_attention needs --do_predict and the image model (not --no_img)")
    if args.seeds and not (args.do_train and args.do_eval):
        parser.error("--seeds needs --do_train and --do_eval")
    if args.pred_file and args.pred_output and os.path.realpath(args.pred_output) == os.path.realpath(args.pred_file):
        parser.error(f"argument --pred_output: {args.pred_output} is the input --pred_file; writing there would "
                     f"overwrite it. Choose another path.")
    for flag in ("data_dir", "model_dir", "wordvec_dir"):
        folder = getattr(args, flag)
        if os.path.exists(folder) and not os.path.isdir(folder):
            parser.error(f"argument --{flag}: {folder} is a file, not a folder. Point --{flag} at a folder.")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Files: found locally, or downloaded from their public location when they have one.

def data_path(args, file_name):
    return data.dataset_file(args.dataset, args.data_dir, file_name, args.offline)


def feature_path(args):
    path = os.path.join(args.data_dir, args.img_feature_file)
    default_name = args.img_feature_file == resources.VGG_FEATURES_FILE
    url = resources.DATASETS[args.dataset].feature_url if default_name else None
    hint = (f"extract features from the images with `python save_vgg_feature.py --dataset {args.dataset} "
            f"--data_dir {args.data_dir}`, or train text-only with --no_img")
    if url is None and not os.path.exists(path):
        raise utils.DownloadError(f"{path} is missing and has no public copy to download.\n  To fix: {hint}")
    return utils.fetch_file(path, url, utils.check_torch_zip, hint, args.offline)


def wordvec_path(args):
    url = resources.WORD_VECTORS_URL if args.w2v_file == resources.WORD_VECTORS_FILE else None
    return utils.fetch_file(os.path.join(args.wordvec_dir, args.w2v_file), url, utils.check_text_lines,
                           "train with random word embeddings: --no_w2v", args.offline)


# ----------------------------------------------------------------------------------------------------------------
# The steps of a run, in the order `run` takes them.

def pick_device(args):
    return torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")


def read_splits(args, names):
    """The data files of `names` (train, dev, test), read and counted."""
    files = {"train": args.train_file, "dev": args.dev_file, "test": args.test_file}
    return {name: data.read_split(name, data_path(args, files[name])) for name in names}


def make_vocab(args, splits):
    """The vocabulary of a new model: words and characters from train (+dev+test with --vocab_from all)."""
    sources = ["train", "dev", "test"] if args.vocab_from == "all" else ["train"]
    word_form = "raw" if args.architecture == "authors" else "glove"  # the authors' code: raw case-sensitive words
    vocab = data.build_vocab([splits[name].tweets for name in sources], splits["train"].tweets,
                             args.word_vocab_size, args.char_vocab_size, sources, word_form)
    logger.info("Vocab from %s%s: %d words, %d chars, tags %s", "+".join(sources),
                " (test words are in the vocabulary, as in the paper's code)" if "test" in sources else "",
                len(vocab.words), len(vocab.chars), vocab.tags)
    if not any(tag != "O" for tag in vocab.tags):
        logger.warning("%s has no entities: the model can only learn to predict O", splits["train"].path)
    return vocab


def load_features(args, splits, use_image):
    """The image features of every tweet of the splits in use, or None for the text-only model. Training and
    evaluation data with no feature at all is an error; a file of new tweets to tag may have none."""
    if not use_image:
        return None
    path = feature_path(args)
    features = data.load_image_features(path, [img_id for split in splits.values() for img_id in split.img_ids],
                                        require_some="predict" not in splits)
    if features.provenance is None:
        logger.info("%s has no provenance record (as the published file): how its features were made is not known; "
                    "save_vgg_feature.py records it", path)
    else:
        logger.info("%s: features made with --preprocess %s and %s", path, features.provenance.get("mode"),
                    features.provenance.get("weights_file"))
    return features


def encode_splits(splits, vocab, features, config, max_seq_len):
    """Examples of every split; only training truncates tweets (to `max_seq_len` words: the first ones, or the last
    ones as the authors' code keeps them)."""
    keep = "last" if config.architecture == "authors" else "first"
    for split in splits.values():
        if split.name != "train":
            data.check_tags_known(split.path, split.tweets, vocab)
        limit = max_seq_len if split.name == "train" else None
        split.examples = data.encode_tweets(split.tweets, vocab, config.max_word_len, features, limit, keep)


def model_config(args, vocab):
    return ModelConfig(num_words=len(vocab.words), num_chars=len(vocab.chars), num_tags=len(vocab.tags),
                       word_emb_dim=args.word_emb_dim, char_emb_dim=args.char_emb_dim,
                       final_char_dim=args.final_char_dim, kernel_sizes=tuple(args.kernel_lst),
                       num_filters=args.num_filters, hidden_dim=args.hidden_dim, use_image=not args.no_img,
                       attention=args.attention, architecture=args.architecture, max_seq_len=args.max_seq_len,
                       max_word_len=args.max_word_len)


MODEL_FLAGS = {"word_emb_dim": "word_emb_dim", "char_emb_dim": "char_emb_dim", "final_char_dim": "final_char_dim",
               "kernel_sizes": "kernel_lst", "num_filters": "num_filters", "hidden_dim": "hidden_dim",
               "use_image": "no_img", "attention": "attention", "architecture": "architecture",
               "max_seq_len": "max_seq_len", "max_word_len": "max_word_len"}  # ModelConfig field -> its flag


def run_config(args, seed, config, vocab, splits, features, device):
    """Everything config.json records about a training run."""
    return {**{k: v for k, v in vars(args).items() if k != "seeds"}, "seed": seed,
            "model_config": dataclasses.asdict(config), "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(),
            "vocab": {"words": len(vocab.words), "chars": len(vocab.chars), "tags": vocab.tags,
                      "built_from": vocab.built_from, "word_form": vocab.word_form,
                      "includes_test_words": "test" in vocab.built_from},
            "data": {name: dataclasses.asdict(split.stats) for name, split in splits.items()},
            "image_features": None if features is None else {
                "missing_ids": len(features.missing_ids),
                "provenance": features.provenance or "no provenance record in the feature file (e.g. the published "
                                                     "img_vgg_features.pt): how it was made is not known"}}


def train_model(args, splits, vocab, features, device, seed, model_dir):
    """Train one model into `model_dir` (checkpoint, config.json, metrics.json, training curve). Returns the
    metrics and whether training was interrupted."""
    utils.set_seed(seed)
    word_vectors = None
    if not args.no_w2v:
        word_vectors = data.load_word_vectors(wordvec_path(args), vocab, args.word_emb_dim, seed=seed)
    config = model_config(args, vocab)
    model = build_model(config, word_vectors).to(device)
    utils.atomic_write_json(os.path.join(model_dir, "config.json"),
                            run_config(args, seed, config, vocab, splits, features, device))
    summary = trainer.train(model, splits["train"].examples, splits["dev"], vocab, features, model_dir=model_dir,
                            optimizer_name=args.optimizer,
                            learning_rate=args.learning_rate, epochs=args.num_train_epochs,
                            batch_size=args.train_batch_size, eval_batch_size=args.eval_batch_size,
                            logging_steps=args.logging_steps, seed=seed, device=device,
                            progress=not args.no_progress)
    metrics = {"best_epoch": summary["best"]["epoch"], "best_step": summary["best"]["step"],
               "dev": summary["best"]["dev"], "history": summary["history"],
               "train_seconds": summary["train_seconds"], "interrupted": bool(summary["interrupted"]),
               "stopped_by": summary["interrupted"] or None}
    utils.atomic_write_json(os.path.join(model_dir, "metrics.json"), metrics)
    if summary["history"]:
        utils.plot_training_curve(summary["history"], os.path.join(model_dir, "training_curve.png"))
    return metrics, summary["interrupted"]


def load_trained(args, device, model_dir):
    """The best checkpoint of `model_dir` with its own vocabulary. Model flags given on the command line that
    contradict the checkpoint are an error; flags not given take the checkpoint's values."""
    checkpoint = os.path.join(model_dir, trainer.CHECKPOINT_FILE)
    model, vocab, saved = trainer.load_checkpoint(checkpoint, device)
    wanted = {field: getattr(args, flag) for field, flag in MODEL_FLAGS.items() if flag in args.given_flags}
    if "kernel_sizes" in wanted:
        wanted["kernel_sizes"] = tuple(args.kernel_lst)
    if "use_image" in wanted:
        wanted["use_image"] = not args.no_img
    mismatches = [f"{field}: checkpoint {getattr(model.config, field)} vs now {value}" for field, value in wanted.items()
                  if value != getattr(model.config, field) and field != "max_seq_len"]  # max_seq_len: training only
    if mismatches:
        raise trainer.CheckpointError(f"{checkpoint} was trained with other settings:\n  " + "\n  ".join(mismatches) +
                                      "\nDrop these flags (the checkpoint knows its settings), or train again.")
    logger.info("Loaded %s (epoch %s, dev F1 %.2f; vocabulary of %d words from %s)", checkpoint, saved["epoch"],
                100 * saved["dev_f1"], len(vocab.words), "+".join(vocab.built_from))
    return model, vocab, saved


def read_run_json(path, advice):
    """A JSON file a run wrote; a DataError naming it and saying what to do (`advice`) when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise data.DataError(f"{path}: cannot be read as JSON ({exc}). {advice}") from None


def read_metrics(model_dir):
    """metrics.json of an earlier run in `model_dir` (its training record), or {} when there is none."""
    path = os.path.join(model_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    return read_run_json(path, "Delete it (it only keeps the training record of the run) and evaluate again.")


def read_config(model_dir, advice):
    """config.json of a trained run in `model_dir` (every setting, the image features' record), or None."""
    path = os.path.join(model_dir, "config.json")
    return read_run_json(path, advice) if os.path.isfile(path) else None


def evaluate_model(args, model, saved, splits, vocab, features, device, model_dir, metrics, memory, wall_start):
    """Score the model on dev and test; write metrics.json and the predictions."""
    metrics.update(best_epoch=saved["epoch"], best_step=saved["step"])
    for name in ("dev", "test"):
        result, predicted = trainer.evaluate(model, splits[name], vocab, features, args.eval_batch_size, device,
                                             not args.no_progress)
        logger.info("\n%s", trainer.format_metrics(name, result))
        metrics[name] = result
        trainer.write_predictions(os.path.join(model_dir, f"{name}_predictions.txt"), splits[name].tweets, predicted)
    memory.sample()
    metrics["peak_memory_gb"] = round(utils.peak_memory_gb(), 3)
    metrics["peak_anonymous_memory_gb"] = None if memory.peak_gb is None else round(memory.peak_gb, 3)
    metrics["wall_seconds"] = round(time.time() - wall_start, 2)
    utils.atomic_write_json(os.path.join(model_dir, "metrics.json"), metrics)
    logger.info("Wrote %s and the predictions to %s", os.path.join(model_dir, "metrics.json"), model_dir)
    return metrics


def train_and_evaluate(args, device, memory):
    """--do_train and/or --do_eval of one model in --model_dir."""
    wall_start = time.time()
    if args.do_train:
        splits = read_splits(args, ["train", "dev"] + (["test"] if args.do_eval or args.vocab_from == "all" else []))
        vocab = make_vocab(args, splits)
    else:
        model, vocab, saved = load_trained(args, device, args.model_dir)
        splits = read_splits(args, ["dev", "test"])
    features = load_features(args, splits, not args.no_img if args.do_train else model.config.use_image)
    encode_splits(splits, vocab, features, model_config(args, vocab) if args.do_train else model.config,
                  args.max_seq_len)
    metrics = {} if args.do_train else read_metrics(args.model_dir)
    if args.do_train:
        metrics, interrupted = train_model(args, splits, vocab, features, device, args.seed, args.model_dir)
        if interrupted:
            logger.warning("Training was interrupted; skipping evaluation. Evaluate the saved checkpoint with "
                           "--do_eval.")
            return 143 if interrupted == "SIGTERM" else 130
        if args.do_eval:
            model, _, saved = load_trained(args, device, args.model_dir)
    if args.do_eval:
        evaluate_model(args, model, saved, splits, vocab, features, device, args.model_dir, metrics, memory,
                       wall_start)
    return 0


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args)
    logger.info("Device: %s", device)
    if args.preset:
        logger.info("--preset %s set %s%s", args.preset, args.preset_set,
                    f"; given explicitly, these win over it: {args.preset_kept}" if args.preset_kept else "")
    memory = utils.AnonymousMemorySampler()
    try:
        code = 0
        if args.seeds:
            code = run_seeds(args, device, memory)
        elif args.do_train or args.do_eval:
            code = train_and_evaluate(args, device, memory)
        if code == 0 and args.do_predict:
            raw = args.text is not None or args.pred_file.lower().endswith(".jsonl")
            code = predict_raw(args, device) if raw else predict_file(args, device)
        return code
    finally:
        memory.stop()


def predict_file(args, device):
    """Tag --pred_file with the checkpoint of --model_dir; score it too when every token came with a tag."""
    model, vocab, saved = load_trained(args, device, args.model_dir)
    split = data.read_split("predict", args.pred_file)
    features = load_features(args, {"predict": split}, model.config.use_image)
    split.examples = data.encode_tweets(split.tweets, vocab, model.config.max_word_len, features)
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
        utils.atomic_write_json(output + ".metrics.json", result)
    if args.save_attention:
        img_dir = os.path.join(args.data_dir, args.img_dir)
        save_attention_maps(args, model, split, features, device, lambda tweet: images.find_image(img_dir, tweet.img_id))
    return 0


def image_pipeline(model_dir, vgg_weights, offline, device, stated_mode=None):
    """The feature extractor that made the features a model was trained on, from the provenance record its
    config.json carries, or, for features without one, from the mode the user states (--image_pipeline)."""
    path = os.path.join(model_dir, "config.json")
    config = read_config(model_dir, "It records how the training features were made, which tagging raw tweets with "
                                    "images needs. Point --model_dir at a trained run.")
    provenance = ((config or {}).get("image_features") or {}).get("provenance")
    provenance = provenance if isinstance(provenance, dict) else None
    if provenance is not None and stated_mode is not None and stated_mode != provenance.get("mode"):
        raise data.DataError(f"{path}: the training features were made with --preprocess {provenance.get('mode')} "
                             f"(their provenance record), not {stated_mode}: drop --image_pipeline.")
    if provenance is None and stated_mode is not None:
        provenance, vgg_weights = save_vgg_feature.stated_provenance(stated_mode, vgg_weights, offline)
        logger.info("The training features have no provenance record; as --image_pipeline states, images are "
                    "extracted with --preprocess %s and %s", stated_mode, vgg_weights)
    return save_vgg_feature.extractor_from_provenance(provenance, vgg_weights, offline, device)


def raw_features(records, extractor):
    """A FeatureTable keyed by record id for the records whose image could be used, and {id: why not} for those
    whose image could not."""
    paths = sorted({record.image for record in records if record.image is not None})
    by_path, failures = extractor.features(paths) if paths else ({}, [])
    reason_of = dict(failures)
    usable = [record for record in records if record.image in by_path]
    regions = [torch.zeros(data.NUM_REGIONS, data.REGION_DIM)] + [by_path[record.image] for record in usable]
    table = data.FeatureTable(regions, {record.id: row for row, record in enumerate(usable, start=1)}, [])
    problems = {record.id: reason_of.get(record.image, "no feature") for record in records
                if record.image is not None and record.image not in by_path}
    return table, problems


def predict_raw(args, device):
    """Tag raw tweets (a JSONL --pred_file, or --text/--image): tokenise them keeping character offsets, extract
    their images' features with the training features' pipeline, and write one JSON line per tweet. Bad lines are
    reported with their line and skipped; the others are still tagged, and the exit code is 2."""
    import raw_tweets  # here, not at the top: nltk's import costs ~1.3 s that training and evaluation never need
    model, vocab, saved = load_trained(args, device, args.model_dir)
    if args.text is not None:
        records, errors = [raw_tweets.record_from_text(args.text, args.image)], []
    else:
        records, errors = raw_tweets.read_jsonl(args.pred_file)
    split = data.Split("predict", args.pred_file or "--text", raw_tweets.to_tweets(records), data.ReadStats())
    features, problems = None, {}
    if model.config.use_image:
        needs_images = any(record.image is not None for record in records)
        extractor = (image_pipeline(args.model_dir, args.vgg_weights, args.offline, device, args.image_pipeline)
                     if needs_images else None)
        features, problems = raw_features(records, extractor)
    split.examples = data.encode_tweets(split.tweets, vocab, model.config.max_word_len, features)
    predicted = trainer.predict(model, split.examples, len(split.tweets), vocab, features, args.eval_batch_size,
                                device, not args.no_progress)
    outputs = [raw_tweets.output_record(record, tags, features is not None and record.id in features.row_of,
                                        problems.get(record.id) if model.config.use_image else
                                        "the model is text-only (trained with --no_img)")
               for record, tags in zip(records, predicted, strict=True)]
    text = raw_tweets.format_jsonl(outputs)
    if args.text is not None and not args.pred_output:
        print(text, end="")
    else:
        output = args.pred_output or os.path.join(args.model_dir, os.path.basename(args.pred_file) + ".predicted.jsonl")
        utils.atomic_write_text(output, text)
        logger.info("Tagged %d tweets of %s -> %s; %d used their image, %d the zero feature", len(records),
                    split.path, output, sum(o["image_feature"] == "image" for o in outputs),
                    sum(o["image_feature"] == "zero" for o in outputs))
    if args.save_attention and features is not None:
        image_of = {record.id: record.image for record in records}
        save_attention_maps(args, model, split, features, device, lambda tweet: image_of[tweet.img_id])
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if errors:
        print(f"error: {len(errors)} lines of {args.pred_file} were skipped (above); the other {len(records)} "
              f"tweets were tagged", file=sys.stderr)
    return 2 if errors else 0


SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def attention_file_name(index, img_id):
    """`<index>_<img_id>.png` with every character of the id outside [A-Za-z0-9_.-] replaced by `_` (an id from a
    data file never becomes a path: no `/`, no `..`)."""
    return f"{index}_{SAFE_NAME.sub('_', img_id).lstrip('.')}.png"


def attention_backdrop(path):
    """The image at `path`, upright, to draw the attention over; None (a plain map) when it is missing or
    unreadable."""
    if path is None or not os.path.isfile(path):
        return None
    try:
        return images.open_image(path)
    except images.ImageError as exc:
        logger.warning("%s; its attention map is drawn without it", exc)
        return None


def save_attention_maps(args, model, split, features, device, image_path_of):
    """<model_dir>/attention/<n>_<img_id>.png for the first --attention_limit tweets of the file: one map per word
    with the additive attention; with concat, where every word of a tweet gets the same map, one map per tweet."""
    folder = os.path.join(args.model_dir, "attention")
    per_word = model.config.attention != "concat"
    model.eval()
    for example in split.examples[:args.attention_limit]:
        tweet = split.tweets[example.index]
        with torch.no_grad():
            _, maps = model(data.collate([example], features).to(device))
        alpha = maps["visual"][0].cpu()                                          # (S, 49)
        image = attention_backdrop(image_path_of(tweet))
        path = os.path.join(folder, attention_file_name(example.index, tweet.img_id))
        if per_word:
            utils.plot_visual_attention(tweet.tokens, alpha, path, image)
        else:
            utils.plot_visual_attention([f"every word ({len(tweet.tokens)}): concat attention is one map per tweet"],
                                        alpha[:1], path, image)
    logger.info("Wrote %d attention maps to %s", min(len(split.examples), args.attention_limit), folder)


def run_seeds(args, device, memory):
    """The same configuration under several seeds: the data, vocabulary and features are read once, then each seed
    trains and evaluates into <model_dir>/seed_<s>/; results.md and results.json summarise them."""
    splits = read_splits(args, ["train", "dev", "test"])
    vocab = make_vocab(args, splits)
    features = load_features(args, splits, not args.no_img)
    encode_splits(splits, vocab, features, model_config(args, vocab), args.max_seq_len)
    per_seed = []
    for seed in args.seeds:
        wall_start = time.time()
        model_dir = os.path.join(args.model_dir, f"seed_{seed}")
        metrics, interrupted = train_model(args, splits, vocab, features, device, seed, model_dir)
        if interrupted:
            return 143 if interrupted == "SIGTERM" else 130
        model, _, saved = load_trained(args, device, model_dir)
        metrics = evaluate_model(args, model, saved, splits, vocab, features, device, model_dir, metrics, memory,
                                 wall_start)
        per_seed.append(seed_row(seed, metrics))
    write_results(args.model_dir, summarise_seeds(args.seeds, per_seed, run_configuration(vars(args))))
    return 0


# How a run is run and what it tags afterwards, not what it trains: left out of a multi-seed summary's settings.
RUN_ONLY_FLAGS = {"seed", "seeds", "summarise", "do_train", "do_eval", "do_predict", "threads", "no_cuda",
                  "no_progress", "verbose", "offline", "pred_file", "text", "image", "vgg_weights", "image_pipeline",
                  "pred_output", "save_attention", "attention_limit"}
# Where a run's files are: recorded, but runs of one configuration may use other folders (--summarise compares
# what the folders held instead: config.json's data counts, vocabulary and image-feature record).
LOCATION_FLAGS = {"model_dir", "data_dir", "wordvec_dir", "img_dir"}


def run_configuration(values):
    """The settings of a run (every flag but RUN_ONLY_FLAGS) from `values` (vars(args), or a config.json of a run
    made before a flag existed: that flag takes its default)."""
    defaults = vars(build_parser().parse_args([]))
    return {flag: values.get(flag, default) for flag, default in defaults.items() if flag not in RUN_ONLY_FLAGS}


def write_results(model_dir, results):
    utils.atomic_write_json(os.path.join(model_dir, "results.json"), results)
    utils.atomic_write_text(os.path.join(model_dir, "results.md"), results_markdown(results))
    logger.info("\n%s", results_markdown(results))


def finished_run(run_dir):
    """config.json and metrics.json of a finished --do_train --do_eval run in `run_dir`."""
    config = read_config(run_dir, "that run cannot be summarised")
    if config is None:
        raise data.DataError(f"{os.path.join(run_dir, 'config.json')}: no such file; --summarise takes the "
                             f"--model_dir of finished --do_train --do_eval runs")
    metrics = read_metrics(run_dir)
    if "test" not in metrics or "wall_seconds" not in metrics or not isinstance(config.get("seed"), int):
        raise data.DataError(f"{run_dir}: has no test scores in metrics.json, or no seed in config.json (the run "
                             f"did not finish). Score it with --do_eval --model_dir {run_dir}, or leave it out.")
    return config, metrics


def comparable_settings(config):
    """What must be the same in runs of one configuration: the settings but the folders, and what the folders
    held (data counts, vocabulary, image-feature record)."""
    settings = {k: v for k, v in run_configuration(config).items() if k not in LOCATION_FLAGS}
    return {**settings, **{key: config.get(key) for key in ("data", "vocab", "image_features")}}


def summarise_runs(run_dirs, model_dir):
    """--summarise: results.md and results.json in `model_dir` from single-seed runs made apart (e.g. in parallel),
    as --seeds writes them. The runs must share every setting but the seed; each is locked while it is read, so a
    run still training is refused."""
    per_seed, first, seen = [], None, set()
    with contextlib.ExitStack() as locks:
        for run_dir in run_dirs:
            if not os.path.isdir(run_dir):
                raise data.DataError(f"{run_dir}: no such folder; --summarise takes the --model_dir of finished runs")
            if os.path.realpath(run_dir) in seen:
                raise data.DataError(f"--summarise: {run_dir} is given twice; give each run once")
            seen.add(os.path.realpath(run_dir))
            locks.enter_context(utils.folder_lock(run_dir))
            config, metrics = finished_run(run_dir)
            if first is None:
                first = run_dir, config
            differences = [f"{k}: {a!r} vs {b!r}" for k, a, b in differing(comparable_settings(first[1]),
                                                                            comparable_settings(config))]
            if differences:
                raise data.DataError(f"{run_dir} was run with other settings than {first[0]}:\n  " +
                                     "\n  ".join(differences) + "\nSummarise runs of one configuration only.")
            per_seed.append(seed_row(config["seed"], metrics))
    seeds = [row["seed"] for row in per_seed]
    if len(set(seeds)) != len(seeds):
        raise data.DataError(f"--summarise: two runs have the same seed ({seeds}); give each seed once")
    write_results(model_dir, summarise_seeds(seeds, per_seed, {**run_configuration(first[1]), "model_dir": model_dir}))
    return 0


def differing(a, b):
    """(key, value in a, value in b) for every key where the dicts `a` and `b` differ, in key order."""
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def seed_row(seed, metrics):
    return {"seed": seed, "best_epoch": metrics["best_epoch"], "wall_seconds": metrics["wall_seconds"],
            **{f"{split}_{m}": metrics[split][m] for split in ("dev", "test") for m in ("precision", "recall", "f1")},
            **{f"test_f1_{name}": r["f1"] for name, r in sorted(metrics["test"]["per_type"].items())}}


def summarise_seeds(seeds, per_seed, configuration):
    """Mean and sample standard deviation of every dev_/test_ metric over the seeds."""
    keys = [k for k in per_seed[0] if k.startswith(("dev_", "test_"))]
    summary = {k: {"mean": statistics.mean(r[k] for r in per_seed),
                   "std": statistics.stdev(r[k] for r in per_seed) if len(per_seed) > 1 else 0.0} for k in keys}
    return {"seeds": seeds, "per_seed": per_seed, "summary": summary, "configuration": configuration}


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
    types = [c[len("test_f1_"):] for c in s if c.startswith("test_f1_")]
    lines += ["", "Test F1 per entity type (" + ", ".join(types) + "), mean +- std:", "",
              "| " + " | ".join(types) + " |", "|" + "---|" * len(types),
              "| " + " | ".join(f"{100 * s['test_f1_' + t]['mean']:.2f} +- {100 * s['test_f1_' + t]['std']:.2f}"
                                for t in types) + " |"]
    config = results["configuration"]
    dataset = config.get("dataset", "twitter2015")
    defaults = dataset_defaults(dataset)
    changed = {k: v for k, v in config.items() if k in defaults and defaults[k] != v}
    wall = [r["wall_seconds"] for r in results["per_seed"]]
    lines += ["", f"Data set {dataset}; seeds {results['seeds']}; wall time per seed {statistics.mean(wall):.0f} s "
              f"(training and evaluation); settings that differ from the data set's defaults: "
              f"{json.dumps(changed) if changed else 'none'}."]
    return "\n".join(lines) + "\n"


def dataset_defaults(dataset):
    """Every flag's default for `dataset` (its folder and file names included), as a dict."""
    return vars(resolve_dataset_defaults(build_parser().parse_args(["--dataset", dataset])))


def terminate(signum, frame):
    """SIGTERM (what schedulers send) stops a run the way Ctrl-C does: between two steps, the log and metrics.json
    saying where."""
    raise utils.Terminated()


def main(argv=None):
    args = parse_args(argv)
    utils.init_logger(args.verbose)
    signal.signal(signal.SIGTERM, terminate)
    try:
        if args.summarise:
            return summarise_runs(args.summarise, args.model_dir)
        if args.do_train or args.do_eval:
            with utils.folder_lock(args.model_dir):
                return run(args)
        return run(args)
    except (data.DataError, trainer.CheckpointError, trainer.TrainingError, utils.DownloadError, utils.OutputError,
            utils.FolderInUse) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # outside training (which handles it itself): reading data, evaluating
        print(f"interrupted ({getattr(exc, 'signal_name', 'SIGINT')})", file=sys.stderr)
        return 143 if isinstance(exc, utils.Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
