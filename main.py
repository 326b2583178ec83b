"""Train and evaluate the Adaptive Co-attention Network (Zhang et al., AAAI 2018) on Twitter-2015 or Twitter-2017.

    python main.py --do_train --do_eval                 # train, keep the best dev checkpoint, score it on test
    python main.py --do_eval                            # score the checkpoint in --model_dir again
    python main.py --do_predict --pred_file tweets.txt  # tag a file with that checkpoint

The experiment, in the order `main` takes it: read the flags; read the data and build the vocabulary (or take it
from the trained run); load the image features; for each seed, train into its run folder and score it on dev and
test; summarise the seeds; tag files or raw tweets.
"""
import os

# oneDNN caches a compiled kernel for every new tensor shape (up to 1024); batches padded to their own length make
# many shapes, and the cache grew the process by ~200 MB in a run. A small cache costs no measurable speed.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import contextlib  # noqa: E402 - after the environment setting above, which must precede torch's first use
import dataclasses  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import as_released  # noqa: E402
import data_loader as data  # noqa: E402
import downloads  # noqa: E402
import flags  # noqa: E402
import image_features  # noqa: E402
import plots  # noqa: E402
import predict  # noqa: E402
import results  # noqa: E402
import trainer  # noqa: E402
import utils  # noqa: E402
from model import ModelConfig  # noqa: E402
from run_folder import RunFolder  # noqa: E402
from word_vectors import load_word_vectors  # noqa: E402

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Files: found locally, or downloaded from their public location when they have one.

def data_path(args, file_name):
    return data.dataset_file(args.dataset, args.data_dir, file_name, args.offline)


def feature_path(args):
    path = os.path.join(args.data_dir, args.img_feature_file)
    default_name = args.img_feature_file == downloads.VGG_FEATURES_FILE
    url = downloads.dataset_named(args.dataset).feature_url if default_name else None
    hint = (f"extract features from the images with `python save_vgg_feature.py --dataset {args.dataset} "
            f"--data_dir {args.data_dir}`, or train text-only with --no_img")
    if url is None and not os.path.exists(path):
        raise downloads.DownloadError(f"{path} is missing and has no public copy to download.\n  To fix: {hint}")
    return downloads.fetch_file(path, url, downloads.check_torch_zip, hint, args.offline)


def wordvec_path(args):
    url = downloads.WORD_VECTORS_URL if args.w2v_file == downloads.WORD_VECTORS_FILE else None
    return downloads.fetch_file(os.path.join(args.wordvec_dir, args.w2v_file), url, downloads.check_text_lines,
                                "train with random word embeddings: --no_w2v", args.offline)


# ----------------------------------------------------------------------------------------------------------------
# The steps of an experiment, in the order `run` takes them.

# The flags that say which data a run was trained and scored on: evaluating the run later takes them from its
# config.json, and refuses other values (LOCATION: the folder may have moved; its files are compared by their counts).
RUN_DATA_FLAGS = ("dataset", "dev_file", "test_file", "img_feature_file", "released_pairing")
RUN_LOCATION_FLAGS = ("data_dir", "img_dir", "train_file")


def adopt_run_data(args, config, run_dir, refuse_others=True):
    """Evaluating or tagging with a trained run: the data set, data folder and files of its config.json, unless
    given. For --do_eval (`refuse_others`), a data flag given with another value than the run's is refused
    (metrics.json would then score other data); tagging may read features from elsewhere."""
    if not config:
        return args
    given = [flag for flag in RUN_DATA_FLAGS if refuse_others and flag in config and flag in args.given_flags]
    conflicts = [f"--{flag} {getattr(args, flag)} (the run: {config[flag]})" for flag in given
                 if getattr(args, flag) != config[flag]]
    if conflicts:
        raise data.DataError(f"{run_dir} was trained and scored on other data than " + ", ".join(conflicts) +
                             ". --do_eval scores a run on its own dev and test files; drop these flags, or score "
                             "other files with --do_predict --pred_file FILE (written beside the run's outputs).")
    for flag in RUN_DATA_FLAGS + RUN_LOCATION_FLAGS:
        if flag in config and flag not in args.given_flags:
            setattr(args, flag, config[flag])
    args.released_scorer = args.released_scorer or bool(config.get("released_scorer"))  # may be added, not dropped
    return args


def pick_device(args):
    return torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")


def read_splits(args, names, recorded=None):
    """The data files of `names` (train, dev, test), read and counted; with `recorded` (the config.json of a
    trained run), each file must be the one the run read: the same sha256 (runs that recorded one) and counts.
    --released_pairing reads all three files and gives the released reader's slots of `names` instead
    (as_released.released_splits)."""
    files = {"train": args.train_file, "dev": args.dev_file, "test": args.test_file}
    read = list(files) if args.released_pairing else names
    splits = {name: data.read_split(name, data_path(args, files[name])) for name in read}
    if args.released_pairing:
        splits = as_released.released_splits(splits)
    splits = {name: splits[name] for name in names}
    for name, split in splits.items():
        then = (recorded or {}).get("data", {}).get(name)
        now = dataclasses.asdict(split.stats)
        then_sha256 = (recorded or {}).get("data_sha256", {}).get(name)
        if isinstance(then, dict) and {k: then.get(k) for k in now} != now:
            differs = (f"it holds {now['tweets']} tweets and {now['tokens']} tokens, the run's held "
                       f"{then.get('tweets')} and {then.get('tokens')}")
        elif then_sha256 and then_sha256 != downloads.sha256_of(split.path):
            differs = "its content changed since (another sha256: a token or tag was edited)"
        else:
            continue
        raise data.DataError(f"{split.path} is not the file the run was trained and scored with: {differs}. Point "
                             f"--data_dir at the run's data, or score this file with --do_predict --pred_file.")
    return splits


def make_vocab(args, splits):
    """The vocabulary of a new model: words and characters from train (+dev+test with --vocab_from all)."""
    sources = ["train", "dev", "test"] if args.vocab_from == "all" else ["train"]
    word_form = "glove"
    if args.architecture == "authors":  # the authors' code: raw case-sensitive words
        word_form = "raw_ascii" if args.released_word_matrix else "raw"
    vocab = data.build_vocab([splits[name].tweets for name in sources], splits["train"].tweets,
                             args.word_vocab_size, args.char_vocab_size, sources, word_form,
                             "bytes" if args.byte_chars else "text")
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
    img_ids = [img_id for split in splits.values() for img_id in split.img_ids]
    features = image_features.load_image_features(path, img_ids, require_some="predict" not in splits)
    if (features.provenance or {}).get("mode") == "synthetic":
        logger.warning("%s holds synthetic features (save_vgg_feature.py --synthetic): random noise that carries "
                       "nothing of the images", path)
    elif features.provenance is None:
        logger.info("%s has no provenance record (as the published file): how its features were made is not known; "
                    "save_vgg_feature.py records it", path)
    else:
        logger.info("%s: features made with --preprocess %s and %s", path, features.provenance.get("mode"),
                    features.provenance.get("weights_file"))
    return features


def describe_provenance(record):
    if record is None:
        return "no provenance record"
    return f"--preprocess {record.get('mode')}, weights {record.get('weights_file')}, made {record.get('date')}"


def check_same_features(path, features, recorded, run_dir):
    """--do_eval: the feature file at `path` must be the one the run was trained with, as far as provenance records
    tell (a re-extraction, synthetic features or another file in its place changes the record)."""
    then = (recorded.get("image_features") or {}).get("provenance")
    then = then if isinstance(then, dict) else None
    if features is None or then == features.provenance:
        return
    raise data.DataError(f"{path}: not the feature file {run_dir} was trained with (the run's: "
                         f"{describe_provenance(then)}; this file: {describe_provenance(features.provenance)}). Put "
                         f"the run's features back (or point --data_dir/--img_feature_file at them), or train again.")


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
                       **flags.model_settings(args))


def load_trained(args, device, run):
    """The best checkpoint of `run` with its own vocabulary. Model flags given on the command line that contradict
    the checkpoint are an error; flags not given take the checkpoint's values."""
    model, vocab, saved = run.load_model(device)
    wanted = flags.model_settings(args, set(args.given_flags) - flags.TRAINING_ONLY_MODEL_FLAGS)
    mismatches = [f"{field}: checkpoint {getattr(model.config, field)} vs now {value}"
                  for field, value in wanted.items() if value != getattr(model.config, field)]
    if "byte_chars" in args.given_flags and args.byte_chars != (vocab.char_form == "bytes"):
        mismatches.append(f"characters: checkpoint {vocab.char_form} vs now bytes")
    if mismatches:
        raise trainer.CheckpointError(f"{run.checkpoint_path} was trained with other settings:\n  " +
                                      "\n  ".join(mismatches) + "\nDrop these flags (the checkpoint knows its "
                                      "settings), or train again.")
    logger.info("Loaded %s (epoch %s, dev F1 %.2f; vocabulary of %d words from %s)", run.checkpoint_path,
                saved["epoch"], 100 * saved["dev_f1"], len(vocab.words), "+".join(vocab.built_from))
    return model, vocab, saved


def run_config(args, seed, config, vocab, splits, features, device):
    """Everything config.json records about a training run."""
    return {**{k: v for k, v in vars(args).items() if k != "seeds"}, "seed": seed,
            "model_config": dataclasses.asdict(config), "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(),
            "vocab": {"words": len(vocab.words), "chars": len(vocab.chars), "tags": vocab.tags,
                      "built_from": vocab.built_from, "word_form": vocab.word_form,
                      "includes_test_words": "test" in vocab.built_from},
            "data": {name: dataclasses.asdict(split.stats) for name, split in splits.items()},
            "data_sha256": {name: downloads.sha256_of(split.path) for name, split in splits.items()},
            "released_quirks": flags.released_quirks(args),
            "released_slots": {name: split.pairing_summary() for name, split in splits.items()
                                 if isinstance(split, as_released.ReleasedSplit)} or None,
            "image_features": None if features is None else {
                "missing_ids": len(features.missing_ids),
                "provenance": features.provenance or "no provenance record in the feature file (e.g. the published "
                                                     "img_vgg_features.pt): how it was made is not known"}}


def train_model(args, splits, vocab, features, device, seed, run):
    """Train one model into the run folder `run` (checkpoint, config.json, metrics.json, training curve). Returns
    the metrics, whether training was interrupted, and the dev scores and predictions of the kept checkpoint."""
    utils.set_seed(seed)
    word_vectors = None
    if not args.no_w2v:
        word_vectors = load_word_vectors(wordvec_path(args), vocab, args.word_emb_dim, seed=seed)
        if args.released_word_matrix:
            word_vectors[0] = as_released.pad_row(wordvec_path(args), args.word_emb_dim, seed)
    elif args.released_word_matrix:
        logger.info("--released_word_matrix with --no_w2v: row 0 (pad) starts as the %s", "uniform(-0.25, 0.25) "
                    "draw every row gets" if args.architecture == "authors" else "zeros of the paper's network, "
                    "which masks pads (the row is never read)")
    config = model_config(args, vocab)
    model = trainer.build_model(config, word_vectors).to(device)
    run.write_config(run_config(args, seed, config, vocab, splits, features, device))
    summary = trainer.train(model, splits["train"].examples, splits["dev"], vocab, features,
                            checkpoint_path=run.checkpoint_path, optimizer_name=args.optimizer,
                            learning_rate=args.learning_rate, epochs=args.num_train_epochs,
                            batch_size=args.train_batch_size, eval_batch_size=args.eval_batch_size,
                            logging_steps=args.logging_steps, seed=seed, device=device,
                            progress=not args.no_progress, released_scorer=args.released_scorer)
    metrics = {"best_epoch": summary["best"]["epoch"], "best_step": summary["best"]["step"],
               "dev": summary["best"]["dev"], "history": summary["history"],
               "train_seconds": summary["train_seconds"], "interrupted": bool(summary["interrupted"]),
               "stopped_by": summary["interrupted"] or None}
    run.write_metrics(metrics)
    if summary["history"]:
        plots.plot_training_curve(summary["history"], run.file("training_curve.png"))
    return metrics, summary["interrupted"], (summary["best"]["dev"], summary["best"]["predicted"])


def evaluate_model(args, model, saved, splits, vocab, features, device, run, metrics, memory, wall_start,
                   scored=None):
    """Score the model on dev and test; write metrics.json and the predictions into the run folder. `scored` maps
    a split to the (scores, predictions) training already had of this checkpoint (its dev evaluation): the same
    model, batches and code give the same predictions, so they are not computed again."""
    metrics.update(best_epoch=saved["epoch"], best_step=saved["step"])
    for name in ("dev", "test"):
        result, predicted = (scored or {}).get(name) or trainer.evaluate(
            model, splits[name], vocab, features, args.eval_batch_size, device, not args.no_progress,
            args.released_scorer)
        if isinstance(splits[name], as_released.ReleasedSplit):  # what was scored: the released slots
            result["released_slots"] = splits[name].pairing_summary()
        logger.info("\n%s", trainer.format_metrics(name, result))
        metrics[name] = result
        trainer.write_predictions(run.file(f"{name}_predictions.txt"), splits[name].tweets, predicted)
    memory.sample()
    metrics["peak_memory_gb"] = round(utils.peak_memory_gb(), 3)
    metrics["peak_anonymous_memory_gb"] = None if memory.peak_gb is None else round(memory.peak_gb, 3)
    metrics["wall_seconds"] = round(time.time() - wall_start, 2)
    run.write_metrics(metrics)
    logger.info("Wrote %s and the predictions to %s", run.file("metrics.json"), run.path)
    return metrics


def prepare_data(args, device):
    """What every seed shares: the splits, the vocabulary and the image features, encoded; for --do_eval alone,
    the trained run's checkpoint, whose vocabulary and settings are used. Returns (splits, vocab, features,
    trained), `trained` being (model, saved) or None."""
    if args.do_train:
        splits = read_splits(args, ["train", "dev"] + (["test"] if args.do_eval or args.vocab_from == "all" else []))
        vocab = make_vocab(args, splits)
        trained, config = None, model_config(args, vocab)
    else:
        run = RunFolder(args.model_dir)
        model, vocab, saved = load_trained(args, device, run)
        recorded = run.read_config() or {}
        splits, trained, config = read_splits(args, ["dev", "test"], recorded), (model, saved), model.config
    features = load_features(args, splits, config.use_image)
    if not args.do_train:
        check_same_features(os.path.join(args.data_dir, args.img_feature_file), features, recorded, args.model_dir)
    encode_splits(splits, vocab, features, config, args.max_seq_len)
    return splits, vocab, features, trained


def train_and_evaluate(args, device, memory):
    """--do_train and/or --do_eval: one run folder per seed (--model_dir itself for a single --seed, or
    <model_dir>/seed_<s> for each of --seeds), every folder this writes locked from the start; --seeds ends with a
    summary in --model_dir."""
    seeds = args.seeds or [args.seed]
    folders = {seed: RunFolder(os.path.join(args.model_dir, f"seed_{seed}") if args.seeds else args.model_dir)
               for seed in seeds}
    with contextlib.ExitStack() as locks:
        for folder in ([RunFolder(args.model_dir)] if args.seeds else []) + list(folders.values()):
            locks.enter_context(folder.writing())
        splits, vocab, features, trained = prepare_data(args, device)
        per_seed = []
        for seed, run in folders.items():
            wall_start = time.time()
            metrics = run.read_metrics() if not args.do_train else {}
            scored = None
            if args.do_train:
                metrics, interrupted, best_dev = train_model(args, splits, vocab, features, device, seed, run)
                if best_dev[1] is not None:  # training's dev evaluation of the kept checkpoint
                    scored = {"dev": best_dev}
                if interrupted:
                    logger.warning("Training was interrupted; skipping evaluation.%s", " Evaluate the saved "
                                   "checkpoint with --do_eval." if os.path.isfile(run.checkpoint_path) else "")
                    return utils.interrupted_code(interrupted)
                if args.do_eval:
                    model, _, saved = load_trained(args, device, run)
                    trained = model, saved
            if args.do_eval:
                model, saved = trained
                metrics = evaluate_model(args, model, saved, splits, vocab, features, device, run, metrics, memory,
                                         wall_start, scored)
                per_seed.append(results.seed_row(seed, metrics))
        if args.seeds:
            configuration = results.run_configuration(vars(args), flags.flag_defaults())
            results.write_results(args.model_dir, results.summarise_seeds(args.seeds, per_seed, configuration),
                                  flags.flag_defaults)
    return 0


def tag(args, device):
    """--do_predict: tag an IMGID-CoNLL file or raw tweets with the run of --model_dir, read under a shared lock
    (no training can replace its checkpoint meanwhile)."""
    run = RunFolder(args.model_dir)
    with run.reading():
        model, vocab, saved = load_trained(args, device, run)
        options = dict(batch_size=args.eval_batch_size, progress=not args.no_progress,
                       attention_limit=args.attention_limit if args.save_attention else 0)
        if args.text is not None or args.pred_file.lower().endswith(".jsonl"):
            extractor = functools.partial(predict.image_extractor, run, args.vgg_weights, args.offline, device,
                                          args.image_pipeline)
            return predict.tag_raw_tweets(model, vocab, device, run, extractor, pred_file=args.pred_file,
                                          text=args.text, image=args.image, output=args.pred_output, **options)
        split = data.read_split("predict", args.pred_file)
        features = load_features(args, {"predict": split}, model.config.use_image)
        output = args.pred_output or run.file(os.path.basename(args.pred_file) + ".predicted")
        return predict.tag_file(model, vocab, device, split, features, output, run,
                                img_dir=os.path.join(args.data_dir, args.img_dir), **options)


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args)
    logger.info("Device: %s", device)
    if args.preset:
        logger.info("--preset %s set %s%s", args.preset, args.preset_set,
                    f"; given explicitly, these win over it: {args.preset_kept}" if args.preset_kept else "")
    if not args.do_train:  # evaluating or tagging a trained run: its data set and files
        run_dir = RunFolder(args.model_dir)
        with run_dir.reading():
            adopt_run_data(args, run_dir.read_config(), args.model_dir, refuse_others=args.do_eval)
        if args.do_eval:
            run_dir.check_writable("--do_eval (metrics.json, the predictions)")
    quirks = flags.released_quirks(args)
    if quirks:
        off = [flag for flag in flags.RELEASED_QUIRKS if flag not in quirks]
        logger.info("Quirks of the released pipeline on%s: %s; off: %s", " (--as_released)" if args.as_released
                    else "", ", ".join(quirks), ", ".join(off) or "none")
    memory = utils.AnonymousMemorySampler()
    try:
        code = 0
        if args.do_train or args.do_eval:
            code = train_and_evaluate(args, device, memory)
        if code == 0 and args.do_predict:
            code = tag(args, device)
        return code
    finally:
        memory.stop()


def parse_args(argv=None):
    return flags.parse_args(argv, description=__doc__)


def main(argv=None):
    args = parse_args(argv)
    utils.init_logger(args.verbose)
    signal.signal(signal.SIGTERM, utils.raise_terminated)  # stops a run as Ctrl-C does
    try:
        if args.summarise:
            return results.summarise_runs(args.summarise, args.model_dir, flags.flag_defaults)
        return run(args)
    except (data.DataError, trainer.CheckpointError, trainer.TrainingError, downloads.DownloadError,
            utils.OutputError, utils.FolderInUse) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # outside training (which handles it itself): reading data, evaluating
        print(f"interrupted ({getattr(exc, 'signal_name', 'SIGINT')})", file=sys.stderr)
        return utils.interrupted_code(getattr(exc, "signal_name", "SIGINT"))


if __name__ == "__main__":
    utils.run_script(main)
