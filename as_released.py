"""What the released-pipeline flags change in a run (flags.RELEASED_QUIRKS; the rules themselves: released.py).

- `--released_pairing`: `released_splits` turns the three files, read by our reader (which checks them), into the
  splits the released reader made of them: its slots, each paired with the image the released script gave it, and
  a summary of how far each split's pairing is from the files (`pairing_summary`) for config.json and metrics.json.
- `--released_scorer`: `authors_scorer` scores a split's predictions as `ner_evaluate.py` did (trainer.evaluate
  adds it next to seqeval's scores).
- `--released_word_matrix`: `pad_row` is row 0 of the word matrix as `load_word_matrix` built it.
- `--byte_chars` needs nothing here: data_loader.CHAR_FORMS["bytes"].
"""
import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

import data_loader as data
import released

logger = logging.getLogger(__name__)


@dataclass
class ReleasedSplit(data.Split):
    """A split as the released reader made it: `tweets` are its slots (tokens and tags of the tweets the slot was
    made of, the image id the slot was paired with); `origins[i]` the (split, index in file) of those tweets;
    `images` the number of image ids the split's file holds."""
    origins: list = field(default_factory=list)
    images: int = 0

    def pairing_summary(self):
        return pairing_summary(self.name, self.origins, self.images)


def pairing_summary(name, origins, images):
    """How the released slots of split `name` relate to its file: slots; slots holding exactly tweet i of the file
    with image i (`own_tweet_and_image`); slots merged from two tweets; slots holding another file's tweet; for
    the slots holding one tweet of this file, `tweet_minus_image`: {offset: slots}, where slot i holds tweet
    i + offset (Twitter-2015 test: {"2": 3255}, two off); and the file's images no slot was paired with."""
    offsets = Counter(str(origin[0][1] - i) for i, origin in enumerate(origins)
                      if len(origin) == 1 and origin[0][0] == name)
    return {"slots": len(origins),
            "own_tweet_and_image": sum(origin == ((name, i),) for i, origin in enumerate(origins)),
            "merged_tweets": sum(len(origin) > 1 for origin in origins),
            "holding_another_files_tweet": sum(any(split != name for split, _ in origin) for origin in origins),
            "tweet_minus_image": dict(sorted(offsets.items(), key=lambda item: int(item[0]))),
            "unused_images": images - len(origins)}


def released_splits(splits):
    """{name: ReleasedSplit} from `splits`, the train, dev and test files as our reader read them (`data.Split`;
    read first, so a file our reader refuses is refused here too): the released reader's slots of each."""
    paths = [splits[name].path for name in released.SPLITS]
    try:
        pairing = released.released_pairing(released.released_sentences(paths))
    except ValueError as exc:
        raise data.DataError(f"{', '.join(paths)}: {exc}") from None
    result = {}
    for name in released.SPLITS:
        slots = pairing[name]
        untagged = sum(tag is None for slot in slots for tag in slot.tags)
        if untagged:
            raise data.DataError(f"{splits[name].path}: {untagged} token lines without a tag; the released reader "
                                 "cannot read them (its vocab_bulid fails on them). Tag every token to use "
                                 "--released_pairing.")
        tweets = [data.Tweet(slot.img_id, slot.tokens, slot.tags, 0) for slot in slots]
        stats = data.ReadStats(tweets=len(tweets), tokens=sum(len(t.tokens) for t in tweets),
                               empty_tweets=sum(not t.tokens for t in tweets))
        result[name] = ReleasedSplit(name, splits[name].path, tweets, stats,
                                     origins=[slot.origins for slot in slots], images=len(splits[name].tweets))
        logger.info("--released_pairing: %s as the released reader made it: %s", name, result[name].pairing_summary())
    return result


def authors_scorer(gold, predicted):
    """The released evaluator's P/R/F1 (`released.authors_score`) and what it counted, as one metrics.json entry.
    Tweets without tokens are left out (the released evaluate fails on them) and counted; `pad_label_predictions`
    counts the real tokens predicted with the pad label '0'."""
    kept = [(g, p) for g, p in zip(gold, predicted, strict=True) if g]
    score = released.authors_score([g for g, _ in kept], [p for _, p in kept])
    entry = score._asdict()
    if not score.tokens:
        entry["accuracy"] = None  # nothing scored (numpy gives nan; metrics.json is strict JSON)
    return {**entry, "window": released.WINDOW, "empty_tweets_left_out": len(gold) - len(kept),
            "pad_label_predictions": sum(tag == released.PAD_LABEL for tags in predicted for tag in tags),
            "rule": "ner_evaluate.py: each tweet's last 35 tokens; chunks by get_chunks, a predicted pad label '0' "
                    "a chunk of its own type; P, R, F1 all 0 when no chunk is correct"}


def vector_of(path, word, dim):
    """The first vector of `word` in a GloVe/word2vec text file, or None (a header line or a malformed line is not a
    vector of it)."""
    prefix = word.encode("utf-8")
    with open(path, "rb") as handle:
        for raw in handle:
            fields = raw.split()
            if fields and fields[0] == prefix and len(fields) == dim + 1:
                try:
                    return np.array([float(value) for value in fields[1:]])
                except ValueError:
                    continue
    return None


def pad_row(path, dim, seed):
    """Row 0 of the released word matrix for the vector file `path`: the vector of "pad" ('PAD'.lower()), or a
    uniform(-0.25, 0.25) draw (numpy, seeded with `seed`), as a float32 tensor."""
    vector = vector_of(path, released.py2_lower(released.PAD_WORD), dim)
    vectors = {} if vector is None else {released.py2_lower(released.PAD_WORD): vector}
    row = released.pad_row_vector(vectors, dim, np.random.default_rng(seed))
    logger.info("--released_word_matrix: row 0 (pad) starts as %s", "the vector of 'pad'" if vector is not None
                else "a uniform(-0.25, 0.25) draw ('pad' has no vector)")
    return torch.tensor(row, dtype=torch.float32)
