"""Several seeds of one configuration as one table: --seeds (trained here) and --summarise (runs made apart).

    <model_dir>/results.md     one row per seed, mean +- sample standard deviation, test F1 per entity type
    <model_dir>/results.json   the same numbers, and the settings the seeds share
"""
import contextlib
import json
import logging
import os
import statistics

import utils
from data_loader import DataError
from run_folder import RunFolder

logger = logging.getLogger(__name__)


# How a run is run and what it tags afterwards, not what it trains: left out of a multi-seed summary's settings.
RUN_ONLY_FLAGS = {"seed", "seeds", "summarise", "do_train", "do_eval", "do_predict", "threads", "no_cuda",
                  "no_progress", "verbose", "offline", "pred_file", "text", "image", "vgg_weights", "image_pipeline",
                  "pred_output", "save_attention", "attention_limit"}
# Where a run's files are: recorded, but runs of one configuration may use other folders (--summarise compares
# what the folders held instead: config.json's data counts, vocabulary and image-feature record).
LOCATION_FLAGS = {"model_dir", "data_dir", "wordvec_dir", "img_dir"}


def run_configuration(values, defaults):
    """The settings of a run (every flag but RUN_ONLY_FLAGS) from `values` (vars(args), or a config.json of a run
    made before a flag existed: that flag takes its value in `defaults`, every flag's default)."""
    return {flag: values.get(flag, default) for flag, default in defaults.items() if flag not in RUN_ONLY_FLAGS}


def write_results(model_dir, results, flag_defaults):
    """results.json and results.md; `flag_defaults(dataset)` gives every flag's default for a data set (the table
    lists the settings that differ from them)."""
    markdown = results_markdown(results, flag_defaults)
    utils.atomic_write_json(os.path.join(model_dir, "results.json"), results)
    utils.atomic_write_text(os.path.join(model_dir, "results.md"), markdown)
    logger.info("\n%s", markdown)


def comparable_settings(config, defaults):
    """What must be the same in runs of one configuration: the settings but the folders, and what the folders
    held (data counts, vocabulary, image-feature record)."""
    settings = {k: v for k, v in run_configuration(config, defaults).items() if k not in LOCATION_FLAGS}
    return {**settings, **{key: config.get(key) for key in ("data", "vocab", "image_features")}}


def summarise_runs(run_dirs, model_dir, flag_defaults):
    """--summarise: results.md and results.json in `model_dir` from single-seed runs made apart (e.g. in parallel),
    as --seeds writes them. The runs must share every setting but the seed; each is locked while it is read, so a
    run still training is refused. `flag_defaults(dataset)`: every flag's default for a data set."""
    defaults = flag_defaults()
    per_seed, first, seen = [], None, set()
    with contextlib.ExitStack() as locks:
        for run_dir in run_dirs:
            if not os.path.isdir(run_dir):
                raise DataError(f"{run_dir}: no such folder; --summarise takes the --model_dir of finished runs")
            if os.path.realpath(run_dir) in seen:
                raise DataError(f"--summarise: {run_dir} is given twice; give each run once")
            seen.add(os.path.realpath(run_dir))
            config, metrics = locks.enter_context(RunFolder(run_dir).reading()).finished()
            if first is None:
                first = run_dir, config
            differences = [f"{k}: {a!r} vs {b!r}" for k, a, b in differing(comparable_settings(first[1], defaults),
                                                                            comparable_settings(config, defaults))]
            if differences:
                raise DataError(f"{run_dir} was run with other settings than {first[0]}:\n  " +
                                "\n  ".join(differences) + "\nSummarise runs of one configuration only.")
            per_seed.append(seed_row(config["seed"], metrics))
    seeds = [row["seed"] for row in per_seed]
    if len(set(seeds)) != len(seeds):
        raise DataError(f"--summarise: two runs have the same seed ({seeds}); give each seed once")
    configuration = {**run_configuration(first[1], defaults), "model_dir": model_dir}
    write_results(model_dir, summarise_seeds(seeds, per_seed, configuration), flag_defaults)
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


def results_markdown(results, flag_defaults):
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
    defaults = flag_defaults(dataset)
    changed = {k: v for k, v in config.items()
               if k in defaults and defaults[k] != v and k != "model_dir"}  # where it was written is no setting
    wall = [r["wall_seconds"] for r in results["per_seed"]]
    lines += ["", f"Data set {dataset}; seeds {results['seeds']}; wall time per seed {statistics.mean(wall):.0f} s "
              f"(training and evaluation); settings that differ from the data set's defaults: "
              f"{json.dumps(changed) if changed else 'none'}."]
    return "\n".join(lines) + "\n"
