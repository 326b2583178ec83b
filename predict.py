"""Tagging with a trained run: IMGID-CoNLL files (scored when tagged), raw tweets (JSONL or one --text), and maps of
the visual attention.

Raw tweets are tokenised keeping character offsets (raw_tweets.py); their images go through the same VGG16 pipeline
that made the run's training features, rebuilt from the provenance record its config.json carries (vgg.py).
"""
import hashlib
import logging
import os
import re
import sys

import torch

import data_loader as data
import image_features
import images
import plots
import trainer
import utils
import vgg

logger = logging.getLogger(__name__)


def tag_file(model, vocab, device, split, features, output, run, *, batch_size, progress, attention_limit, img_dir):
    """Tag the tweets of `split` (an IMGID-CoNLL file) into `output`; score them too when every token came with a
    tag (`<output>.metrics.json`). `attention_limit` > 0 draws the attention of that many tweets into the run. A
    tweet that cannot be tagged (memory ran out) is reported with its line and left out; the exit code is then 2."""
    refuse_attention_of_text_only(model, attention_limit, run)
    split.examples = data.encode_tweets(split.tweets, vocab, model.config.max_word_len, features)
    failed = []
    predicted = trainer.predict(model, split.examples, len(split.tweets), vocab, features, batch_size, device,
                                progress, failed)
    errors = [untagged(f"{split.path}:{split.tweets[index].line}", len(split.tweets[index].tokens))
              for index in sorted(failed)]
    tweets = [tweet for tweet, tags in zip(split.tweets, predicted) if tags is not None]
    predicted = [tags for tags in predicted if tags is not None]
    has_gold = split.stats.missing_tags == 0
    trainer.write_predictions(output, tweets, predicted, with_gold=has_gold)
    no_feature = sum(1 for img_id in split.img_ids if features is not None and img_id not in features.row_of)
    logger.info("Tagged %d tweets (%d tokens) of %s -> %s; %d tweets had no image feature (zero feature used)",
                len(tweets), sum(len(tweet.tokens) for tweet in tweets), split.path, output, no_feature)
    if has_gold:
        result = trainer.score([t.tags for t in tweets], predicted)
        logger.info("\n%s", trainer.format_metrics(os.path.basename(split.path), result))
        utils.atomic_write_json(output + ".metrics.json", result)
    if attention_limit and features is not None:
        split.examples = [example for example in split.examples if example.index not in failed]
        save_attention_maps(model, split, features, device, run.file("attention"), attention_limit,
                            lambda tweet: images.find_image(img_dir, tweet.img_id))
    return report_skipped(errors, split.path, len(tweets), "tweet")


def refuse_attention_of_text_only(model, attention_limit, run):
    """--save_attention with a text-only checkpoint: there is no visual attention to draw."""
    if attention_limit and not model.config.use_image:
        raise trainer.CheckpointError(f"--save_attention: {run.checkpoint_path} is a text-only model (trained with "
                                      f"--no_img), which has no visual attention to draw. Drop --save_attention.")


def untagged(where, num_tokens):
    """The message for a tweet the model ran out of memory on."""
    return (f"{where}: this tweet of {num_tokens:,} tokens could not be tagged: memory ran out. Split it into "
            f"shorter tweets, or tag it on a machine with more memory.")


def report_skipped(errors, source, tagged, unit):
    """Print each error and how many `unit`s (lines, tweets) of the file `source` (None: --text) were skipped;
    the exit code: 2 if any."""
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if errors and source is not None:
        skipped = len(errors)
        print(f"error: {skipped} {unit}{'s' * (skipped != 1)} of {source} {'was' if skipped == 1 else 'were'} "
              f"skipped (above); the other {tagged} tweet{'s' * (tagged != 1)} {'was' if tagged == 1 else 'were'} "
              f"tagged", file=sys.stderr)
    return 2 if errors else 0


# ----------------------------------------------------------------------------------------------------------------
# Raw tweets

def image_extractor(run, vgg_weights, offline, device, stated_mode=None):
    """The feature extractor that made the features the run was trained on, from the provenance record its
    config.json carries, or, for features without one, from the mode the user states (--image_pipeline)."""
    path = run.file("config.json")
    config = run.read_config("It records how the training features were made, which tagging raw tweets with "
                             "images needs. Point --model_dir at a trained run.")
    if config is None and stated_mode is None:
        raise data.DataError(f"{path} is missing: it records how the training features were made, which tagging raw "
                             f"tweets with images needs. Point --model_dir at the folder of a trained run (with its "
                             f"config.json), or state the pipeline with --image_pipeline.")
    provenance = ((config or {}).get("image_features") or {}).get("provenance")
    provenance = provenance if isinstance(provenance, dict) else None
    if (provenance or {}).get("mode") == "synthetic":
        raise data.DataError(f"{path}: the model was trained on synthetic features (save_vgg_feature.py --synthetic), "
                             f"which no image can be turned into: tag the tweets without their images, or train on "
                             f"features extracted from images.")
    if provenance is not None and stated_mode is not None and stated_mode != provenance.get("mode"):
        raise data.DataError(f"{path}: the training features were made with --preprocess {provenance.get('mode')} "
                             f"(their provenance record), not {stated_mode}: drop --image_pipeline.")
    if provenance is None and stated_mode is not None:
        provenance, vgg_weights = vgg.stated_provenance(stated_mode, vgg_weights, offline)
        logger.info("The training features have no provenance record; as --image_pipeline states, images are "
                    "extracted with --preprocess %s and %s", stated_mode, vgg_weights)
    return vgg.extractor_from_provenance(provenance, vgg_weights, offline, device)


def raw_features(records, extractor):
    """A FeatureTable keyed by record id for the records whose image could be used, and {id: why not} for those
    whose image could not."""
    paths = sorted({record.image for record in records if record.image is not None})
    by_path, failures = extractor.features(paths) if paths else ({}, [])
    reason_of = dict(failures)
    usable = [record for record in records if record.image in by_path]
    zero = torch.zeros(image_features.NUM_REGIONS, image_features.REGION_DIM)
    regions = [zero] + [by_path[record.image] for record in usable]
    table = image_features.FeatureTable(regions, {record.id: row for row, record in enumerate(usable, start=1)}, [])
    problems = {record.id: reason_of.get(record.image, "no feature") for record in records
                if record.image is not None and record.image not in by_path}
    return table, problems


def tag_raw_tweets(model, vocab, device, run, make_extractor, *, pred_file, text, image, output, batch_size,
                   progress, attention_limit):
    """Tag raw tweets (the JSONL `pred_file`, or the one tweet `text` with its `image`): tokenise them keeping
    character offsets, extract their images' features with `make_extractor()` (called only when some tweet has
    an image), and write one JSON line per tweet to `output` (for `text` without `output`: standard output). Bad
    lines, and tweets that cannot be tagged (memory ran out), are reported with their line and skipped; the others
    are still tagged, and the exit code is 2."""
    import raw_tweets  # here, not at the top: nltk's import costs ~1.3 s that training and evaluation never need
    refuse_attention_of_text_only(model, attention_limit, run)
    if text is not None:
        records, errors = [raw_tweets.record_from_text(text, image)], []
    else:
        records, errors = raw_tweets.read_jsonl(pred_file)
    split = data.Split("predict", pred_file or "--text", raw_tweets.to_tweets(records), data.ReadStats())
    features, problems = None, {}
    if model.config.use_image:
        needs_images = any(record.image is not None for record in records)
        features, problems = raw_features(records, make_extractor() if needs_images else None)
    split.examples = data.encode_tweets(split.tweets, vocab, model.config.max_word_len, features)
    failed = []
    predicted = trainer.predict(model, split.examples, len(split.tweets), vocab, features, batch_size, device,
                                progress, failed)
    errors += [untagged(f"{pred_file}:{records[index].line}" if text is None else "--text",
                        len(records[index].tokens)) for index in sorted(failed)]
    outputs = [raw_tweets.output_record(record, tags, features is not None and record.id in features.row_of,
                                        problems.get(record.id), text_only=not model.config.use_image)
               for record, tags in zip(records, predicted, strict=True) if tags is not None]
    if text is not None and not output:
        print(raw_tweets.format_jsonl(outputs), end="")
    else:
        output = output or run.file(os.path.basename(pred_file) + ".predicted.jsonl")
        utils.atomic_write_text(output, raw_tweets.format_jsonl(outputs))
        log_raw_outputs(outputs, split.path, output)
    if attention_limit and features is not None:
        image_of = {record.id: record.image for record in records}
        split.examples = [example for example in split.examples if example.index not in failed]
        save_attention_maps(model, split, features, device, run.file("attention"), attention_limit,
                            lambda tweet: image_of[tweet.img_id])
    return report_skipped(errors, pred_file, len(outputs), "line")


def log_raw_outputs(outputs, source, output):
    """One log line: how many tweets were written, and how many used their image."""
    images_used = sum(o["image_feature"] == "image" for o in outputs)
    zero = sum(o["image_feature"] == "zero" for o in outputs)
    logger.info("Tagged %d tweets of %s -> %s; %s", len(outputs), source, output,
                f"{images_used} used their image, {zero} the zero feature" if images_used + zero == len(outputs)
                else "a text-only model: no image was read")


# ----------------------------------------------------------------------------------------------------------------
# Attention maps

SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
MAX_NAME = 200  # bytes: file systems allow 255, and utils.atomic_path's temporary name adds 14 to it


def attention_file_name(index, img_id):
    """`<index>_<img_id>.png` with every character of the id outside [A-Za-z0-9_.-] replaced by `_` (an id from a
    data file never becomes a path: no `/`, no `..`). An id too long for a file name is cut, and 12 hex digits of
    its sha256 are added (`<index>_<start of the id>-<hash>.png`), so that the name still tells ids apart."""
    safe = SAFE_NAME.sub("_", img_id).lstrip(".")  # ASCII only: a character is a byte
    name = f"{index}_{safe}.png"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(img_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{index}_{safe[:MAX_NAME - len(f'{index}_-{digest}.png')]}-{digest}.png"


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


def concat_title(num_words):
    """The title of a concat attention map: one map serves every word of the tweet."""
    return f"all {num_words} words (concat)"


def save_attention_maps(model, split, features, device, folder, limit, image_path_of):
    """<folder>/<n>_<img_id>.png for the first `limit` tweets of the split: one map per word with the additive
    attention; with concat, where every word of a tweet gets the same map, one map per tweet."""
    per_word = model.config.attention != "concat"
    model.eval()
    for example in split.examples[:limit]:
        tweet = split.tweets[example.index]
        with torch.no_grad():
            _, maps = model(data.collate([example], features).to(device), textual_map=False)
        alpha = maps["visual"][0].cpu()                                          # (S, 49)
        image = attention_backdrop(image_path_of(tweet))
        path = os.path.join(folder, attention_file_name(example.index, tweet.img_id))
        if per_word:
            plots.plot_visual_attention(tweet.tokens, alpha, path, image)
        else:
            plots.plot_visual_attention([concat_title(len(tweet.tokens))], alpha[:1], path, image)
    logger.info("Wrote %d attention maps to %s", min(len(split.examples), limit), folder)
