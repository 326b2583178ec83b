"""The command line of main.py: every flag in its group, the presets, and the combinations refused before any data
is read. MODEL_FLAGS names once which flag gives which ModelConfig setting.
"""
import argparse
import os
import sys

import torch

import downloads
import utils
import vgg

positive_int, non_negative_int = utils.int_at_least(1), utils.int_at_least(0)
# Bounds on the sizes a batch is padded to: beyond them a step costs gigabytes and minutes, and no tweet needs them
# (Twitter-2015's longest tweet has 41 words, its longest word 77 characters)
MAX_SEQ_LEN, MAX_AUTHORS_SEQ_LEN, MAX_WORD_LEN = 1000, 200, 200


def int_in(low, high):
    """argparse type: an integer in [low, high]."""
    def parse(text):
        value = positive_int(text) if low == 1 else non_negative_int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
        return value
    return parse


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
    if value < torch.finfo(torch.float32).tiny:
        raise argparse.ArgumentTypeError(f"expected a number of at least {torch.finfo(torch.float32).tiny:.2g} (the "
                                         f"weights are float32: a smaller one is 0 there), got {text!r}")
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

# Every ModelConfig setting a flag gives, named once: field -> (flag, flag value -> field value). The vocabulary
# sizes come from the data; region_dim and char_dropout are fixed.
MODEL_FLAGS = {
    "word_emb_dim": ("word_emb_dim", int), "char_emb_dim": ("char_emb_dim", int),
    "final_char_dim": ("final_char_dim", int), "kernel_sizes": ("kernel_lst", tuple),
    "num_filters": ("num_filters", int), "hidden_dim": ("hidden_dim", int),
    "use_image": ("no_img", lambda no_img: not no_img), "attention": ("attention", str),
    "architecture": ("architecture", str), "max_seq_len": ("max_seq_len", int),
    "max_word_len": ("max_word_len", int),
}
TRAINING_ONLY_MODEL_FLAGS = {"max_seq_len"}  # may differ at evaluation: it only truncates training tweets


def model_settings(args, flags=None):
    """The ModelConfig fields the flags give (only those of `flags`, a set of flag names, when given)."""
    return {field: convert(getattr(args, flag)) for field, (flag, convert) in MODEL_FLAGS.items()
            if flags is None or flag in flags}


def add_task_flags(p):
    g = p.add_argument_group("what to do")
    g.add_argument("--do_train", action="store_true", help="train on --train_file, keep the best checkpoint on "
                   "--dev_file")
    g.add_argument("--do_eval", action="store_true", help="score the best checkpoint on --dev_file and --test_file")
    g.add_argument("--do_predict", action="store_true", help="tag --pred_file (or the one raw tweet of --text) with "
                   "the best checkpoint")
    g.add_argument("--seeds", type=seed_list, default=None, help="run --do_train --do_eval once per seed (e.g. 7,8,9) "
                   "into <model_dir>/seed_<s>/ and summarise in <model_dir>/results.md and results.json")
    g.add_argument("--summarise", nargs="+", metavar="RUN_DIR", default=None, help="instead of training: summarise "
                   "finished single-seed runs (each the --model_dir of a --do_train --do_eval run, all with the same "
                   "settings but the seed, e.g. run in parallel) into <model_dir>/results.md and results.json, as "
                   "--seeds does")


def add_data_flags(p):
    g = p.add_argument_group("data")
    known = ", ".join(downloads.DATASETS)
    g.add_argument("--dataset", default="twitter2015", help=f"which data set: {known}, or the name of a local one in "
                   "the IMGID format (with --data_dir; files train.txt, valid.txt, test.txt, images in images/ unless "
                   "--train_file/--dev_file/--test_file/--img_dir say otherwise). Sets the defaults of --data_dir, "
                   "the split file names and --img_dir, where missing files are downloaded from, and the name "
                   "results are reported under. Evaluating a trained run takes it from the run")
    g.add_argument("--data_dir", default=None, help="folder with the train/dev/test files and the image-feature file "
                   "(default: ./data/<dataset>)")
    g.add_argument("--train_file", default=None, help="training file name inside --data_dir (default: the data "
                   "set's, train or train.txt)")
    g.add_argument("--dev_file", default=None, help="development file name inside --data_dir (default: dev or "
                   "valid.txt)")
    g.add_argument("--test_file", default=None, help="test file name inside --data_dir (default: test or test.txt)")
    g.add_argument("--img_feature_file", default="img_vgg_features.pt", help="image id -> (49, 512) VGG16 pool5 "
                   "features inside --data_dir (save_vgg_feature.py writes it)")
    g.add_argument("--img_dir", default=None, help="image folder inside --data_dir (for --save_attention; default: the "
                   "data set's, " + ", ".join(f"{d.img_dir} for {n}" for n, d in downloads.DATASETS.items()) + ")")
    g.add_argument("--wordvec_dir", default="./wordvec", help="folder of the pretrained word-vector file")
    g.add_argument("--w2v_file", default="word_vector_200d.vec", help="word vectors inside --wordvec_dir "
                   "(GloVe/word2vec text)")
    g.add_argument("--offline", action="store_true", help="never download a missing file; stop with a message "
                   "instead")
    g.add_argument("--max_seq_len", type=int_in(1, MAX_SEQ_LEN), default=35, help="paper: training tweets are "
                   "truncated to this many words (evaluation and prediction tag every token); authors: also the width "
                   f"every tweet is front-padded to, so the cost of every step grows with it (at most "
                   f"{MAX_AUTHORS_SEQ_LEN} there; {MAX_SEQ_LEN} for paper)")
    g.add_argument("--max_word_len", type=int_in(1, MAX_WORD_LEN), default=30, help="characters per word seen by the "
                   "char CNN (the rest of a longer word is cut); paper: words are padded to the longest in the batch, "
                   f"authors: every word to exactly this (at most {MAX_WORD_LEN})")
    g.add_argument("--word_vocab_size", type=non_negative_int, default=23204, help="cap on the word vocabulary (with "
                   "[PAD], [UNK]); 0: every word")
    g.add_argument("--char_vocab_size", type=non_negative_int, default=102, help="cap on the char vocabulary (with "
                   "[PAD], [UNK]); 0: every character")
    g.add_argument("--vocab_from", choices=["all", "train"], default="all", help="build the vocab from "
                   "train+dev+test as the paper's code does (all: test words are in the vocabulary), or from train "
                   "only (a stricter protocol)")


def add_model_flags(p):
    g = p.add_argument_group("model")
    g.add_argument("--architecture", choices=["paper", "authors"], default="paper", help="paper: the equations of "
                   "the paper; authors: the authors' released Keras model (two BiLSTMs, three-block char CNN, raw "
                   "regions, front padding to --max_seq_len with no masking and a pad label, raw case-sensitive "
                   "vocabulary); see docs/sources.md")
    g.add_argument("--preset", choices=list(PRESETS), default=None, help="authors: the released setup in one flag: "
                   + ", ".join(f"--{k} {v}" for k, v in PRESETS["authors"].items()) + "; flags given explicitly win")
    g.add_argument("--attention", choices=["concat", "additive"], default="concat", help="concat: the paper's "
                   "equations; additive: w.tanh(W_v v + W_h h + b), where the word conditions the attention")
    g.add_argument("--no_img", action="store_true", help="text-only ablation (BiLSTM-CNN-CRF): no image features "
                   "needed")
    g.add_argument("--no_w2v", action="store_true", help="random word embeddings (uniform +-0.25) instead of "
                   "--w2v_file")
    g.add_argument("--word_emb_dim", type=positive_int, default=200, help="word embedding size")
    g.add_argument("--char_emb_dim", type=positive_int, default=30, help="character embedding size")
    g.add_argument("--final_char_dim", type=positive_int, default=50, help="size of the char-CNN word representation")
    g.add_argument("--hidden_dim", type=positive_int, default=200, help="BiLSTM output size k (k/2 per direction); "
                   "must be even")
    g.add_argument("--kernel_lst", type=int_list, default=[2, 3, 4], help="char-CNN kernel widths, comma-separated")
    g.add_argument("--num_filters", type=positive_int, default=32, help="char-CNN filters per kernel width")


def add_training_flags(p):
    g = p.add_argument_group("training")
    g.add_argument("--seed", type=non_negative_int, default=7, help="random seed")
    g.add_argument("--train_batch_size", type=positive_int, default=16, help="tweets per training step")
    g.add_argument("--optimizer", choices=["adam", "rmsprop"], default="adam", help="optimizer")
    g.add_argument("--learning_rate", type=positive_float, default=0.001, help="learning rate")
    g.add_argument("--num_train_epochs", type=positive_int, default=5, help="training epochs")
    g.add_argument("--logging_steps", type=non_negative_int, default=0, help="also evaluate dev every N steps (0: per "
                   "epoch only)")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    g.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's "
                   "choice)")


def add_evaluation_flags(p):
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_batch_size", type=positive_int, default=32, help="tweets per evaluation batch")


# The quirks of the authors' released pipeline (released.py) that a run can switch on, one flag each; --as_released
# switches on all of them. Flag -> what it does, for --help, the log and config.json.
RELEASED_QUIRKS = {
    "released_pairing": "read train/dev/test as the released load_sentence did: a file's last tweet merged with the "
                        "next file's first, slot i of a split paired with image i of that split (Twitter-2015: "
                        "dev one off, 3,255 test tweets two off)",
    "released_scorer": "also score dev and test with the released ner_evaluate.py (each tweet's last 35 tokens, a "
                       "predicted pad label '0' counted as a chunk): metrics.json 'authors_scorer', next to seqeval",
    "byte_chars": "characters are UTF-8 bytes, words cut at --max_word_len bytes (Python 2 byte strings)",
    "released_word_matrix": "the released load_word_matrix: row 0 (pad) starts as the vector of 'pad' or a "
                            "uniform(-0.25, 0.25) draw, not zeros; with the raw vocabulary of --architecture "
                            "authors, vectors are looked up with ASCII-only lower-casing (Python 2)",
}


def add_released_flags(p):
    g = p.add_argument_group("the authors' released pipeline, quirks included (released.py, docs/sources.md)")
    g.add_argument("--as_released", action="store_true", help="every quirk below at once; with --preset authors "
                   "(or --architecture authors): the released pipeline as it ran on the public files")
    for flag, meaning in RELEASED_QUIRKS.items():
        g.add_argument(f"--{flag}", action="store_true", help=meaning)


def add_prediction_flags(p):
    g = p.add_argument_group("prediction (with --do_predict)")
    g.add_argument("--pred_file", help="file to tag: IMGID-CoNLL (tags optional; scored when present), or raw tweets "
                   "as JSONL (name ending in .jsonl; one {\"text\": ..., \"image\": path, \"id\": ...} per line)")
    g.add_argument("--text", help="tag this one raw tweet (instead of --pred_file); prints its JSON")
    g.add_argument("--image", help="with --text: the tweet's image file")
    g.add_argument("--vgg_weights", help="raw tweets with images: the VGG16 weights file that made the training "
                   "features (as their provenance record names it); default: torchvision's cached checkpoint when "
                   "that is the one")
    g.add_argument("--image_pipeline", choices=vgg.MODES, default=None, help="raw tweets with images, for a model "
                   "whose training features have no provenance record: the save_vgg_feature.py --preprocess mode "
                   "that made them (the published img_vgg_features.pt: seed), with --vgg_weights for other weights")
    g.add_argument("--save_attention", action="store_true", help="a PNG of the visual attention (7 x 7 grid) per tweet "
                   "in <model_dir>/attention/, over the image when --img_dir has it: one map per word with "
                   "--attention additive, one map for the whole tweet with concat (where every word's map is the "
                   "same)")
    g.add_argument("--attention_limit", type=positive_int, default=20, help="--save_attention draws the first N "
                   "tweets")


def add_output_flags(p):
    g = p.add_argument_group("output")
    g.add_argument("--model_dir", default="./model", help="the run folder: checkpoint, config.json, metrics.json and "
                   "predictions")
    g.add_argument("--pred_output", help="where --do_predict writes (default: <model_dir>/<pred_file name>.predicted, "
                   "or .predicted.jsonl for raw tweets)")
    g.add_argument("--no_progress", action="store_true", help="no tqdm progress bars")
    g.add_argument("--verbose", action="store_true", help="debug logging (lists, e.g., image ids without features)")


def build_parser(description=None):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # every flag spelt out, so a run knows which flags were given
    for add_flags in (add_task_flags, add_data_flags, add_model_flags, add_training_flags, add_evaluation_flags,
                      add_released_flags, add_prediction_flags, add_output_flags):
        add_flags(p)
    return p


def given_flags(argv):
    """The flags written on the command line (their dests), as opposed to those left at their defaults."""
    return sorted({token[2:].split("=", 1)[0] for token in argv if token.startswith("--")})


def resolve_dataset_defaults(args):
    """Fill the flags left unset (None) with the defaults of --dataset; flags given explicitly win."""
    dataset = downloads.dataset_named(args.dataset)
    defaults = {"data_dir": dataset.data_dir, "img_dir": dataset.img_dir,
                **dict(zip(["train_file", "dev_file", "test_file"], dataset.split_files))}
    for flag, value in defaults.items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    return args


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


def apply_as_released(args):
    """--as_released: switch on every quirk of RELEASED_QUIRKS, as if each had been given."""
    if args.as_released:
        for flag in RELEASED_QUIRKS:
            setattr(args, flag, True)
        args.given_flags = sorted(set(args.given_flags) | set(RELEASED_QUIRKS))
    return args


def released_quirks(args):
    """The RELEASED_QUIRKS a run has on, in their order (flags missing from an older config.json are off)."""
    values = args if isinstance(args, dict) else vars(args)
    return [flag for flag in RELEASED_QUIRKS if values.get(flag)]


def flag_defaults(dataset="twitter2015"):
    """Every flag's default for `dataset` (its folder and file names included), as a dict."""
    return vars(resolve_dataset_defaults(build_parser().parse_args(["--dataset", dataset])))


def check_args(parser, args):
    """Combinations of flags that cannot work: one argparse error line each."""
    task = args.do_train or args.do_eval or args.do_predict
    if args.summarise and (task or args.seeds):
        parser.error("--summarise only reads finished runs: give it without --do_train/--do_eval/--do_predict/--seeds")
    if args.summarise and "model_dir" not in args.given_flags:
        parser.error("--summarise needs --model_dir: the folder for results.md and results.json")
    if not (task or args.summarise):
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
    if args.architecture == "authors" and args.max_seq_len > MAX_AUTHORS_SEQ_LEN:
        parser.error(f"argument --max_seq_len: at most {MAX_AUTHORS_SEQ_LEN} with --architecture authors, which pads "
                     f"every tweet to it (got {args.max_seq_len})")
    if args.architecture == "authors" and (args.no_img or args.attention != "concat"):
        parser.error("--architecture authors has no text-only variant and uses the concat attention only: drop "
                     "--no_img/--attention, or use --architecture paper")
    if args.as_released and args.architecture != "authors":
        parser.error("--as_released is the released pipeline, network included: use it with --preset authors (or "
                     "--architecture authors); with the paper's network give the quirks one by one ("
                     + ", ".join(f"--{flag}" for flag in RELEASED_QUIRKS) + ")")
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


def parse_args(argv=None, description=None):
    """The flags of `argv` (default: the command line), with the data set's defaults and the preset applied, and
    every impossible combination refused; `description`: the text --help shows above the flags."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(description)
    args = parser.parse_args(argv)
    args.given_flags = given_flags(argv)
    args = apply_as_released(apply_preset(resolve_dataset_defaults(args)))
    check_args(parser, args)
    return args
