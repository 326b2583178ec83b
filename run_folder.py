"""A run folder: what one training run writes, read back by every later command through this one place.

    <model_dir>/config.json    every setting of the run, its data (file names and counts), vocabulary summary and
                               the image features' provenance record
    <model_dir>/model.pt       the best checkpoint: weights, model settings and vocabulary (trainer.save_checkpoint)
    <model_dir>/metrics.json   the training record (best epoch, history) and the dev/test scores
    <model_dir>/.lock          held by the process that writes the folder (exclusive) or reads it (shared)

A training run writes the folder under an exclusive lock; evaluating, tagging and summarising read it under a shared
lock, which needs no write access (a colleague's read-only runs can be read) and is refused while a training holds
the folder, so a reader never sees a checkpoint being replaced.
"""
import contextlib
import json
import math
import os

import trainer
import utils
from data_loader import DataError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = trainer.CHECKPOINT_FILE


def read_json(path, advice):
    """A JSON file a run wrote; a DataError naming it and saying what to do (`advice`) when it cannot be read.
    NaN and infinities are refused: the project never writes them (utils.atomic_write_json), so one is an edit."""
    problem = utils.not_a_file(path)
    if problem:
        raise DataError(f"{path}: {problem}, not a JSON file. {advice}")

    def refuse_constant(name):
        raise ValueError(f"{name} is not a number JSON allows")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_constant=refuse_constant)
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc}). {advice}") from None


class RunFolder:
    """The folder of one run (`path`, e.g. --model_dir or <model_dir>/seed_<s>)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def checkpoint_path(self):
        return self.file(CHECKPOINT_FILE)

    # ------------------------------------------------------------------------------------------------------------
    # Locks

    def writing(self):
        """Exclusive lock for a run that writes here (training, evaluation); the folder is created if needed."""
        return utils.folder_lock(self.path)

    @contextlib.contextmanager
    def reading(self):
        """Shared lock for a command that reads the run (tagging, summarising). The folder must exist; write access
        is not needed."""
        if not os.path.isdir(self.path):
            what = "is not a folder" if os.path.exists(self.path) else "does not exist"
            raise DataError(f"{self.path} {what}: point --model_dir at the folder of a trained run.")
        with utils.folder_lock(self.path, shared=True):
            yield self

    def check_writable(self, what):
        """Stop before any work when an existing folder cannot be written (e.g. a colleague's read-only run)."""
        if os.path.isdir(self.path) and not os.access(self.path, os.W_OK | os.X_OK):
            raise utils.OutputError(13, f"{self.path} is not writable, and {what} writes there. Copy the run "
                                        f"(cp -r {self.path} <yours>) and give the copy as --model_dir.")

    # ------------------------------------------------------------------------------------------------------------
    # config.json and metrics.json

    def write_config(self, config):
        utils.atomic_write_json(self.file(CONFIG_FILE), config)

    def read_config(self, advice="Point --model_dir at the folder of a trained run."):
        """config.json of the run, or None when the folder has none."""
        path = self.file(CONFIG_FILE)
        return read_json(path, advice) if os.path.lexists(path) else None

    def write_metrics(self, metrics):
        utils.atomic_write_json(self.file(METRICS_FILE), metrics)

    def read_metrics(self):
        """metrics.json of the run (its training record), or {} when there is none."""
        path = self.file(METRICS_FILE)
        if not os.path.lexists(path):
            return {}
        return read_json(path, "Delete it (it only keeps the training record of the run) and evaluate again.")

    def finished(self):
        """(config, metrics) of a finished --do_train --do_eval run, every value a summary reads checked."""
        config = self.read_config("That run cannot be summarised.")
        if config is None:
            raise DataError(f"{self.file(CONFIG_FILE)}: no such file; --summarise takes the --model_dir of finished "
                            f"--do_train --do_eval runs")
        metrics = self.read_metrics()
        if "test" not in metrics or "wall_seconds" not in metrics or not isinstance(config.get("seed"), int):
            raise DataError(f"{self.path}: has no test scores in metrics.json, or no seed in config.json (the run "
                            f"did not finish). Score it with --do_eval --model_dir {self.path}, or leave it out.")
        check_scores(self.file(METRICS_FILE), metrics)
        return config, metrics

    # ------------------------------------------------------------------------------------------------------------
    # The checkpoint

    def load_model(self, device="cpu"):
        """(model, vocab, saved) of the best checkpoint, checked against the run's config.json: a checkpoint whose
        model settings contradict the config.json beside it (copied from another run) is refused."""
        model, vocab, saved = trainer.load_checkpoint(self.checkpoint_path, device)
        config = self.read_config()
        recorded = (config or {}).get("model_config")
        if isinstance(recorded, dict):
            differing = [f"{key}: model.pt {value!r} vs config.json {recorded[key]!r}"
                         for key, value in saved["model_config"].items()
                         if key in recorded and _as_json(recorded[key]) != _as_json(value)]
            if differing:
                raise trainer.CheckpointError(f"{self.checkpoint_path} does not belong to {self.file(CONFIG_FILE)}:\n  "
                                              + "\n  ".join(differing) + "\nRestore the run's own model.pt, or train "
                                              "again.")
        return model, vocab, saved


def _as_json(value):
    """A value as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def check_scores(path, metrics):
    """Every dev/test score a summary reads is a number in [0, 1], and the per-type table has one for each type."""
    for split in ("dev", "test"):
        scores = metrics.get(split)
        if not isinstance(scores, dict):
            raise DataError(f"{path}: '{split}' is not a table of scores. Score the run again with --do_eval.")
        rows = {split: scores, **{f"{split}.per_type.{name}": row
                                  for name, row in (scores.get("per_type") or {}).items()}}
        if not isinstance(scores.get("per_type"), dict):
            raise DataError(f"{path}: '{split}.per_type' is missing. Score the run again with --do_eval.")
        for where, row in rows.items():
            for key in ("precision", "recall", "f1"):
                value = row.get(key) if isinstance(row, dict) else None
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1 \
                        or math.isnan(value):
                    raise DataError(f"{path}: '{where}.{key}' is {value!r}, not a score between 0 and 1. Score the "
                                    f"run again with --do_eval --model_dir {os.path.dirname(path) or '.'}.")
    if not isinstance(metrics.get("best_epoch"), (int, float)) or not isinstance(metrics.get("wall_seconds"),
                                                                                 (int, float)):
        raise DataError(f"{path}: 'best_epoch' or 'wall_seconds' is not a number. Score the run again with --do_eval.")

