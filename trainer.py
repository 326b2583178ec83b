"""Training and evaluation of ACN: Adam (or RMSprop), dev evaluation every epoch, the best-dev checkpoint kept,
entity-level P/R/F1 from seqeval."""
import dataclasses
import logging
import math
import time
from collections import Counter

import torch
from seqeval.metrics.sequence_labeling import get_entities
from tqdm import tqdm

import as_released
import released
from data_loader import Vocab, batches, collate, num_batches
from model import ACN, ModelConfig
from model_authors import AuthorsACN
from utils import atomic_torch_save, atomic_write_text, not_a_file

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the current vocabulary/settings."""


def build_model(config: ModelConfig, word_vectors=None):
    """ACN (the paper's equations, model.py) or AuthorsACN (the released code, model_authors.py), as
    config.architecture says."""
    if config.architecture == "paper":
        return ACN(config, word_vectors)
    if config.architecture == "authors":
        return AuthorsACN(config, word_vectors)
    raise ValueError(f"unknown architecture {config.architecture!r}; use 'paper' or 'authors'")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints hold plain tensors, numbers, strings and lists only, so they load with weights_only=True. A checkpoint
# carries its vocabulary and its model settings (the character cut included): it is scored with nothing else.

def save_checkpoint(path, model, vocab, epoch, step, dev_f1):
    atomic_torch_save({"model": model.state_dict(),
                       "model_config": {**dataclasses.asdict(model.config),
                                        "kernel_sizes": list(model.config.kernel_sizes)},
                       "vocab": vocab.to_dict(),
                       "epoch": epoch, "step": step, "dev_f1": dev_f1}, path)


def load_checkpoint(path, device="cpu"):
    """Rebuild the model saved at `path` (on the CPU, then moved to `device`). Returns (model, vocab, saved).
    Raise CheckpointError when it is missing, unreadable, or not one of ours."""
    problem = not_a_file(path)
    if problem == "does not exist":
        raise CheckpointError(f"{path}: no trained model there. Train first (--do_train), or point --model_dir at "
                              f"the folder of a trained run.")
    if problem:
        raise CheckpointError(f"{path}: {problem}, not a checkpoint file. Point --model_dir at the folder of a "
                              f"trained run.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        config = ModelConfig(**{**saved["model_config"], "kernel_sizes": tuple(saved["model_config"]["kernel_sizes"])})
        vocab = Vocab.from_dict(saved["vocab"])
        model = build_model(config)
        model.load_state_dict(saved["model"])
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises many types; all mean "train again"
        raise CheckpointError(f"{path}: the checkpoint is corrupt or not one of ours ({type(exc).__name__}: "
                              f"{str(exc)[:200]}). Train again with --do_train.") from None
    check_vocab_fits(path, vocab, config)
    return model.to(device), vocab, saved


def check_vocab_fits(path, vocab, config):
    """The vocabulary a checkpoint carries must be the one its weights were trained with: as many words, characters
    and tags as the embedding and CRF sizes, distinct entries, and PAD/UNK/O where the code expects them."""
    sizes = [(what, len(entries), expected) for what, entries, expected in (
        ("words", vocab.words, config.num_words), ("characters", vocab.chars, config.num_chars),
        ("tags", vocab.tags, config.num_tags))]
    problems = [f"{n} {what} for weights sized for {expected}"
                for what, n, expected in sizes if n != expected]
    problems += [f"repeated {what}" for what, entries in (("words", vocab.words), ("characters", vocab.chars),
                                                           ("tags", vocab.tags)) if len(set(entries)) != len(entries)]
    if problems:
        raise CheckpointError(f"{path}: its vocabulary does not fit its weights ({'; '.join(problems)}): it was "
                              f"edited or comes from another model. Restore the run's own model.pt, or train again.")


# ----------------------------------------------------------------------------------------------------------------
# Evaluation

def progress_bar(iterable, progress, **options):
    """A tqdm bar over `iterable` when `progress` is on and standard error is a terminal (tqdm's disable=None): a
    log redirected to a file gets no bar and none of its escape codes."""
    return tqdm(iterable, disable=None if progress else True, **options)


def out_of_memory(exc):
    """Whether `exc` says that memory ran out: Python's MemoryError, torch's CPU allocator ("not enough memory") or
    CUDA's ("out of memory", torch.cuda.OutOfMemoryError)."""
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and
                                            ("not enough memory" in str(exc) or "out of memory" in str(exc)))


def decode_or_none(decode, batch, device):
    """The model's tag ids for `batch`, or None when memory ran out (any other error is raised). It returns before
    anything is tried again: inside the except block the failed frames, and their tensors, are still held."""
    try:
        return decode(batch.to(device))
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return None


def predict(model, examples, num_tweets, vocab, features, batch_size, device, progress=True, failures=None,
            pad_label=False):
    """Predicted tags (strings) for every tweet of a file, in file order; [] for a tweet with no tokens. With
    `pad_label`, a model that has a pad label (the authors' architecture) gives it as the released '0' where it
    predicts it on a real token, instead of "O".

    With a `failures` list (tagging a file), a batch that runs out of memory is tagged again tweet by tweet, and a
    tweet that does not fit alone gets None and its index is appended to `failures`. Without one (scoring, which
    needs every tweet), running out of memory is raised."""
    model.eval()
    predictions = [[] for _ in range(num_tweets)]
    example_of = {example.index: example for example in examples}
    decode = model.decode_released if pad_label and hasattr(model, "decode_released") else model.decode
    names = vocab.tags + [released.PAD_LABEL]  # index len(vocab.tags): the authors' pad label
    stream = batches(examples, batch_size, features, by_length=True)
    for batch in progress_bar(stream, progress, total=num_batches(examples, batch_size), desc="Evaluating",
                              leave=False):
        tagged = decode(batch.to(device)) if failures is None else decode_or_none(decode, batch, device)
        if tagged is None and len(batch.indices) > 1:  # one tweet at a time: only the ones that do not fit fail
            tagged = [(decode_or_none(decode, collate([example_of[index]], features), device) or [None])[0]
                      for index in batch.indices]
        for index, tag_ids in zip(batch.indices, tagged or [None]):
            if tag_ids is None:
                failures.append(index)
            predictions[index] = None if tag_ids is None else [names[t] for t in tag_ids]
    return predictions


def score(gold, predicted):
    """Entity-level precision/recall/F1 (seqeval, conlleval rules) overall and per entity type, with counts: the
    numbers of seqeval's classification_report and precision/recall/f1_score, float for float. The entities are
    seqeval's, read once per side (its own report reads both sides again for every number); the counts are
    divided as seqeval divides them (zero_division=0)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} tweets of gold tags but {len(predicted)} of predicted ones")
    for tweet, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"tweet {tweet}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted ones; "
                             f"every gold token needs one prediction")
    gold_entities, predicted_entities = get_entities(gold), get_entities(predicted)
    correct = set(gold_entities) & set(predicted_entities)  # (type, first, last) in the joined tweets: unique
    gold_of, predicted_of, correct_of = (Counter(name for name, _, _ in entities)  # entity type -> count
                                         for entities in (gold_entities, predicted_entities, correct))
    per_type = {}
    for name in sorted(gold_of | predicted_of):  # seqeval's order of its rows
        p, r, f = prf(correct_of[name], predicted_of[name], gold_of[name])
        per_type[name] = {"precision": p, "recall": r, "f1": f, "support": gold_of[name]}
    precision, recall, f1 = prf(len(correct), len(predicted_entities), len(gold_entities))
    return {"precision": precision, "recall": recall, "f1": f1, "per_type": per_type,
            "tweets": len(gold),
            "tokens": sum(len(tags) for tags in gold),
            "gold_entities": len(gold_entities),
            "predicted_entities": len(predicted_entities)}


def prf(correct, predicted, gold):
    """Precision, recall and F1 of `correct` entities among `predicted` and `gold` ones, 0 where a denominator is
    0: seqeval's arithmetic, beta 1 (2 p r / (p + r)), with zero_division=0."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def evaluate(model, split, vocab, features, batch_size, device, progress=True, released_scorer=False):
    """Score the model on a split (tweets + their full-length examples); returns (metrics, predictions). With
    `released_scorer`, metrics["authors_scorer"] also scores the same predictions as the released ner_evaluate.py
    did, a predicted pad label included (seqeval and the predictions returned read it as "O", as without)."""
    predicted = predict(model, split.examples, len(split.tweets), vocab, features, batch_size, device, progress,
                        pad_label=released_scorer)
    gold = [tweet.tags for tweet in split.tweets]
    seen = [["O" if tag == released.PAD_LABEL else tag for tag in tags] for tags in predicted]
    metrics = score(gold, seen)
    if released_scorer:
        metrics["authors_scorer"] = as_released.authors_scorer(gold, predicted)
    return metrics, seen


def format_metrics(name, metrics):
    lines = [f"{name}: P {100 * metrics['precision']:.2f}  R {100 * metrics['recall']:.2f}  "
             f"F1 {100 * metrics['f1']:.2f}  ({metrics['tweets']} tweets, {metrics['tokens']} tokens, "
             f"{metrics['gold_entities']} gold entities)"]
    for type_name, r in sorted(metrics["per_type"].items()):
        lines.append(f"  {type_name:<10} P {100 * r['precision']:6.2f}  R {100 * r['recall']:6.2f}  "
                     f"F1 {100 * r['f1']:6.2f}  support {r['support']}")
    authors = metrics.get("authors_scorer")
    if authors:
        lines.append(f"  the authors' scorer (last {authors['window']} tokens, pad-label chunks): P "
                     f"{100 * authors['precision']:.2f}  R {100 * authors['recall']:.2f}  F1 {100 * authors['f1']:.2f}"
                     f"  ({authors['tweets']} tweets, {authors['tokens']} tokens, {authors['gold_entities']} gold "
                     f"entities, {authors['pad_label_predictions']} pad labels predicted)")
    return "\n".join(lines)


def write_predictions(path, tweets, predicted, with_gold=True):
    """CoNLL output: `IMGID:<id>`, then `token<TAB>gold<TAB>predicted` (or `token<TAB>predicted`) per token."""
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
        # Keras' RMSprop defaults, the only source that trains ACN with RMSprop (torch's own alpha is 0.99)
        return torch.optim.RMSprop(parameters, lr=learning_rate, alpha=0.9, eps=1e-8)
    raise ValueError(f"unknown optimizer {name!r}")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message says where it stopped and what to try."""


def train_step(model, optimizer, batch):
    """One update on one batch (already on the model's device); returns the loss as a float. A non-finite loss
    raises TrainingError before the update (an update can still overflow weights: `train` checks them)."""
    loss = model.loss(batch)
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingError(f"the training loss is {value}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


def dev_can_choose(dev):
    """Whether dev F1 can choose the best checkpoint: not when dev has no gold entity (F1 is 0 whatever the model
    does), which is said in the log."""
    if get_entities([tweet.tags for tweet in dev.tweets]):
        return True
    logger.warning("%s has no gold entity, so dev F1 is 0 whatever the model does: the checkpoint of the latest "
                   "evaluation is kept instead of the best one", dev.path)
    return False


def train(model, train_examples, dev, vocab, features, *, checkpoint_path, optimizer_name, learning_rate,
          epochs, batch_size, eval_batch_size, logging_steps, seed, device, progress=True, released_scorer=False):
    """Train, evaluating on dev after every epoch (and every `logging_steps` steps if > 0); the checkpoint with the
    best dev F1 is kept at `checkpoint_path`. When dev has no gold entity, F1 cannot choose, and the latest
    evaluation is kept instead (said in the log); `released_scorer` as in `evaluate` (the choice stays seqeval's F1).
    Returns the history and the best evaluation (its scores, and `predicted`: its dev predictions, which are the
    checkpoint's).

    Ctrl-C (or SIGTERM, which main.py turns into the same exception) stops training between two steps: the best
    checkpoint so far is intact (it is written atomically), and the interruption is reported in the returned
    summary (`interrupted`). A non-finite loss, or weights gone non-finite (checked before every evaluation),
    stops training with TrainingError; a checkpoint never holds a non-finite weight."""
    if not train_examples:
        raise TrainingError("the training data has no tweet with tokens: there is nothing to train on")
    optimizer = make_optimizer(optimizer_name, model.parameters(), learning_rate)
    generator = torch.Generator().manual_seed(seed)
    history, best = [], {"dev_f1": -1.0, "epoch": None, "step": None, "dev": None, "predicted": None}
    step, steps_per_epoch = 0, num_batches(train_examples, batch_size)
    dev_has_entities = dev_can_choose(dev)
    start = time.time()

    def evaluate_dev(epoch, train_loss):
        if not all(torch.isfinite(p).all() for p in model.parameters()):  # one update can overflow float32
            raise TrainingError(f"the weights are no longer finite after step {step} (epoch {epoch}): training "
                                f"diverged. Lower --learning_rate (now {learning_rate}); {kept()}.")
        metrics, predicted = evaluate(model, dev, vocab, features, eval_batch_size, device, progress,
                                      released_scorer)
        model.train()
        entry = {"epoch": epoch, "step": step, "train_loss": train_loss, "dev_f1": metrics["f1"],
                 "elapsed_s": round(time.time() - start, 2)}
        history.append(entry)
        logger.info("epoch %s step %d: train loss %.4f, dev F1 %.2f", epoch, step, train_loss, 100 * metrics["f1"])
        if metrics["f1"] > best["dev_f1"] or not dev_has_entities:
            save_checkpoint(checkpoint_path, model, vocab, epoch, step, metrics["f1"])
            best.update(dev_f1=metrics["f1"], epoch=epoch, step=step, dev=metrics, predicted=predicted)
            logger.info("%s dev F1 %.2f; saved %s", "new best" if dev_has_entities else "latest",
                        100 * metrics["f1"], checkpoint_path)

    def kept():
        return (f"the best checkpoint so far (epoch {best['epoch']}, dev F1 {100 * best['dev_f1']:.2f}) is intact at "
                f"{checkpoint_path}" if best["epoch"] is not None else "no checkpoint had been saved yet")
    interrupted = None  # or the name of the signal that stopped training
    model.train()
    try:
        for epoch in progress_bar(range(1, epochs + 1), progress, desc="Epoch"):
            loss_sum, loss_count = 0.0, 0
            stream = batches(train_examples, batch_size, features, shuffle=True, generator=generator)
            for batch in progress_bar(stream, progress, total=steps_per_epoch, desc="Training", leave=False):
                try:
                    loss = train_step(model, optimizer, batch.to(device))
                except TrainingError as exc:
                    raise TrainingError(f"{exc} at step {step + 1} (epoch {epoch}): training diverged. Lower "
                                        f"--learning_rate (now {learning_rate}); {kept()}.") from None
                step += 1
                loss_sum, loss_count = loss_sum + loss, loss_count + 1
                if logging_steps > 0 and step % logging_steps == 0 and step % steps_per_epoch != 0:
                    evaluate_dev(epoch - 1 + (step % steps_per_epoch) / steps_per_epoch, loss_sum / loss_count)
            evaluate_dev(epoch, loss_sum / max(1, loss_count))
    except KeyboardInterrupt as exc:
        interrupted = getattr(exc, "signal_name", "SIGINT")
        logger.warning("Interrupted (%s) at step %d; %s.", interrupted, step, kept())
    return {"history": history, "best": best, "steps": step, "train_seconds": round(time.time() - start, 2),
            "interrupted": interrupted}
