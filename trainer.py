"""Training and evaluation of ACN: Adam (or RMSprop), dev evaluation every epoch, the best-dev checkpoint kept,
entity-level P/R/F1 from seqeval."""
import dataclasses
import logging
import os
import time

import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from tqdm import tqdm

from data_loader import batches, num_batches
from model import ACN, ModelConfig
from utils import atomic_torch_save

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the current vocabulary/settings."""


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints hold plain tensors, numbers, strings and lists only, so they load with weights_only=True.

def save_checkpoint(path, model, vocab, epoch, step, dev_f1):
    atomic_torch_save({"model": model.state_dict(),
                       "model_config": {**dataclasses.asdict(model.config),
                                        "kernel_sizes": list(model.config.kernel_sizes)},
                       "tags": list(vocab.tags),
                       "num_words": len(vocab.words), "num_chars": len(vocab.chars),
                       "epoch": epoch, "step": step, "dev_f1": dev_f1}, path)


def load_checkpoint(path, vocab, expected_config=None, device="cpu"):
    """Rebuild the model saved at `path`. Raise CheckpointError when it is missing or unreadable, or when it was
    trained with another vocabulary or other dimensions than `vocab`/`expected_config` (the differences listed)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no trained model there. Train first (--do_train), or point --model_dir at "
                              f"the folder of a trained run.")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        config = ModelConfig(**{**saved["model_config"], "kernel_sizes": tuple(saved["model_config"]["kernel_sizes"])})
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises many types; all mean "train again"
        raise CheckpointError(f"{path}: the checkpoint is corrupt or not one of ours ({type(exc).__name__}: "
                              f"{str(exc)[:200]}). Train again with --do_train.") from None
    mismatches = []
    if saved["tags"] != list(vocab.tags):
        mismatches.append(f"tags: checkpoint {saved['tags']} vs vocab {list(vocab.tags)}")
    for name, now in (("num_words", len(vocab.words)), ("num_chars", len(vocab.chars))):
        if saved[name] != now:
            mismatches.append(f"{name}: checkpoint {saved[name]} vs vocab {now}")
    if expected_config is not None:
        for f in dataclasses.fields(ModelConfig):
            old, new = getattr(config, f.name), getattr(expected_config, f.name)
            if f.name != "char_dropout" and old != new:
                mismatches.append(f"{f.name}: checkpoint {old} vs now {new}")
    if mismatches:
        raise CheckpointError(f"{path} was trained with other settings:\n  " + "\n  ".join(mismatches) +
                              "\nUse the flags and --vocab_dir of that run, or train again.")
    model = ACN(config)
    model.load_state_dict(saved["model"])
    return model.to(device), saved


# ----------------------------------------------------------------------------------------------------------------
# Evaluation

def predict(model, examples, num_tweets, vocab, features, batch_size, device, progress=True):
    """Predicted tags (strings) for every tweet of a file, in file order; [] for a tweet with no tokens."""
    model.eval()
    predictions = [[] for _ in range(num_tweets)]
    stream = batches(examples, batch_size, features, by_length=True)
    for batch in tqdm(stream, total=num_batches(examples, batch_size), desc="Evaluating", leave=False,
                      disable=not progress):
        for index, tag_ids in zip(batch.indices, model.decode(batch.to(device))):
            predictions[index] = [vocab.tags[t] for t in tag_ids]
    return predictions


def score(gold, predicted):
    """Entity-level precision/recall/F1 (seqeval, conlleval rules) overall and per entity type, with counts."""
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {name: {"precision": float(r["precision"]), "recall": float(r["recall"]), "f1": float(r["f1-score"]),
                       "support": int(r["support"])}
                for name, r in report.items() if not name.endswith(" avg")}
    return {"precision": float(precision_score(gold, predicted, zero_division=0)),  # seqeval gives numpy floats
            "recall": float(recall_score(gold, predicted, zero_division=0)),
            "f1": float(f1_score(gold, predicted, zero_division=0)),
            "per_type": per_type,
            "tweets": len(gold),
            "tokens": sum(len(tags) for tags in gold),
            "gold_entities": len(get_entities(gold)),
            "predicted_entities": len(get_entities(predicted))}


def evaluate(model, split, vocab, features, batch_size, device, progress=True):
    """Score the model on a split (tweets + their full-length examples); returns (metrics, predictions)."""
    predicted = predict(model, split.examples, len(split.tweets), vocab, features, batch_size, device, progress)
    return score([tweet.tags for tweet in split.tweets], predicted), predicted


def format_metrics(name, metrics):
    lines = [f"{name}: P {100 * metrics['precision']:.2f}  R {100 * metrics['recall']:.2f}  "
             f"F1 {100 * metrics['f1']:.2f}  ({metrics['tweets']} tweets, {metrics['tokens']} tokens, "
             f"{metrics['gold_entities']} gold entities)"]
    for type_name, r in sorted(metrics["per_type"].items()):
        lines.append(f"  {type_name:<10} P {100 * r['precision']:6.2f}  R {100 * r['recall']:6.2f}  "
                     f"F1 {100 * r['f1']:6.2f}  support {r['support']}")
    return "\n".join(lines)


def write_predictions(path, tweets, predicted, with_gold=True):
    """CoNLL output: `IMGID:<id>`, then `token<TAB>gold<TAB>predicted` (or `token<TAB>predicted`) per token."""
    from utils import atomic_write_text
    out = []
    for tweet, tags in zip(tweets, predicted):
        out.append(f"IMGID:{tweet.img_id}")
        for token, gold, pred in zip(tweet.tokens, tweet.tags, tags, strict=True):  # every token has a prediction
            out.append(f"{token}\t{gold}\t{pred}" if with_gold else f"{token}\t{pred}")
        out.append("")
    atomic_write_text(path, "\n".join(out) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Training

def make_optimizer(name, parameters, learning_rate):
    if name == "adam":
        # fused: one kernel for the whole update (same arithmetic); ~1.4x faster training on CPU
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")


def train_step(model, optimizer, batch):
    """One update on one batch (already on the model's device); returns the loss tensor."""
    loss = model.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train(model, train_examples, dev, vocab, features, *, model_dir, optimizer_name, learning_rate, epochs,
          batch_size, eval_batch_size, logging_steps, seed, device, progress=True):
    """Train, evaluating on dev after every epoch (and every `logging_steps` steps if > 0); the checkpoint with the
    best dev F1 is kept at <model_dir>/model.pt. Returns the history and the best evaluation.

    Ctrl-C stops training between two steps: the best checkpoint so far is intact (it is written atomically), and
    the interruption is reported in the returned summary (`interrupted`)."""
    optimizer = make_optimizer(optimizer_name, model.parameters(), learning_rate)
    generator = torch.Generator().manual_seed(seed)
    checkpoint_path = os.path.join(model_dir, CHECKPOINT_FILE)
    history, best = [], {"dev_f1": -1.0, "epoch": None, "step": None, "dev": None}
    step, steps_per_epoch = 0, num_batches(train_examples, batch_size)
    start = time.time()

    def evaluate_dev(epoch, train_loss):
        metrics, _ = evaluate(model, dev, vocab, features, eval_batch_size, device, progress)
        model.train()
        entry = {"epoch": epoch, "step": step, "train_loss": train_loss, "dev_f1": metrics["f1"],
                 "elapsed_s": round(time.time() - start, 2)}
        history.append(entry)
        logger.info("epoch %s step %d: train loss %.4f, dev F1 %.2f", epoch, step, train_loss, 100 * metrics["f1"])
        if metrics["f1"] > best["dev_f1"]:
            save_checkpoint(checkpoint_path, model, vocab, epoch, step, metrics["f1"])
            best.update(dev_f1=metrics["f1"], epoch=epoch, step=step, dev=metrics)
            logger.info("new best dev F1 %.2f; saved %s", 100 * metrics["f1"], checkpoint_path)

    interrupted = False
    model.train()
    try:
        for epoch in tqdm(range(1, epochs + 1), desc="Epoch", disable=not progress):
            loss_sum, loss_count = 0.0, 0
            stream = batches(train_examples, batch_size, features, shuffle=True, generator=generator)
            for batch in tqdm(stream, total=steps_per_epoch, desc="Training", leave=False, disable=not progress):
                loss = train_step(model, optimizer, batch.to(device))
                step += 1
                loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
                if logging_steps > 0 and step % logging_steps == 0 and step % steps_per_epoch != 0:
                    evaluate_dev(epoch - 1 + (step % steps_per_epoch) / steps_per_epoch, loss_sum / loss_count)
            evaluate_dev(epoch, loss_sum / max(1, loss_count))
    except KeyboardInterrupt:
        interrupted = True
        where = (f"best checkpoint so far (epoch {best['epoch']}, dev F1 {100 * best['dev_f1']:.2f}) is intact at "
                 f"{checkpoint_path}" if best["epoch"] is not None else "no checkpoint had been saved yet")
        logger.warning("Interrupted at step %d; the %s.", step, where)
    return {"history": history, "best": best, "steps": step, "train_seconds": round(time.time() - start, 2),
            "interrupted": interrupted}
