"""The data of ACN: the IMGID-CoNLL reader, token normalisation, vocabularies, word vectors, and padded batches
(the cached VGG16 image features they carry: image_features.py).

Nothing here drops data silently: every substitution (a missing tag read as O, a tweet with no image feature,
an unknown word) is counted and reported, and anything malformed stops with a DataError that names the file
and line (or the image id) and says what to do.
"""
import functools
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

import downloads
import released
import utils

logger = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"  # index 0 and 1 of the word and char vocabularies


class DataError(ValueError):
    """Bad input. The message names the file and line (or the image id) and what to do about it."""


# ----------------------------------------------------------------------------------------------------------------
# Reading the IMGID-CoNLL format

@dataclass
class Tweet:
    img_id: str          # kept as a string: other releases use ids like "17_06_12483"
    tokens: list
    tags: list
    line: int            # 1-based line number of the IMGID line, for messages


@dataclass
class ReadStats:
    tweets: int = 0
    tokens: int = 0
    missing_tags: int = 0        # token lines with no tag, read as O
    empty_tweets: int = 0        # IMGID with no token line; kept (nothing to tag)
    dangling_inside: int = 0     # I-X not preceded by B-X/I-X; seqeval reads it as the start of an entity
    duplicate_ids: int = 0       # tweets whose image id was already used by an earlier tweet; all kept
    tagged_id_lines: int = 0     # `IMGID:<id><TAB><tag>` lines: the tag column is not part of the id


BIO_TAG = re.compile(r"O|[BI]-\S+")


def _decode_utf8(path, raw):
    try:
        return raw.decode("utf-8-sig")  # -sig: a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1)
        raise DataError(f"{path}:{line}: byte {raw[exc.start]:#04x} at byte offset {exc.start} (byte {column} of "
                        f"the line) is not UTF-8. Re-encode the file as UTF-8 "
                        f"(e.g. `iconv -f latin1 -t utf-8`).") from None


def read_bytes(path, what, hint):
    """The bytes of a data file, or a DataError that says why it cannot be read (`what` names the file's role,
    `hint` the flags that point elsewhere)."""
    problem = utils.not_a_file(path)
    if problem:
        raise DataError(f"{path}: {'no such file' if problem == 'does not exist' else f'{problem}, not a {what}'}. "
                        f"{hint}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}). Check its permissions (`ls -l {path}`).") from None


LINE_END = re.compile(r"\r\n|\r|\n")  # CRLF, old-Mac CR and LF; not U+2028 and the like, which tokens may hold
BLANK = " \t"                          # a blank line holds only these


def invisible_line_error(path, line_no, line):
    codes = ", ".join(sorted({f"U+{ord(c):04X}" for c in line if c not in BLANK}))
    return DataError(f"{path}:{line_no}: the line holds only invisible characters ({codes}). A blank line must be "
                     f"empty; delete the characters or the line.")


def parse_id_line(path, line_no, line, stats):
    """The image id of an `IMGID:<id>` line (a tag column after a tab, as some converters write it, is counted)."""
    img_id, _, tag_column = line[len("IMGID:"):].partition("\t")
    img_id = img_id.strip()
    if not img_id:
        raise DataError(f"{path}:{line_no}: `IMGID:` has no id after it.")
    if tag_column.strip():  # `IMGID:123<TAB>O`: the id is what precedes
        if not BIO_TAG.fullmatch(tag_column.strip()):
            raise DataError(f"{path}:{line_no}: {line!r} is not `IMGID:<id>`; expected the id alone.")
        stats.tagged_id_lines += 1
    return img_id


def parse_token_line(path, line_no, line, stats):
    """(token, tag) of a `token<TAB>tag` line; a token without a tag is read as O and counted."""
    fields = line.split("\t")
    if len(fields) > 2:
        raise DataError(f"{path}:{line_no}: {len(fields)} tab-separated fields in {line!r}; expected "
                        f"`token<TAB>tag`. Remove the extra columns.")
    token = fields[0]
    tag = fields[1].strip() if len(fields) == 2 else ""
    if token == "":
        raise DataError(f"{path}:{line_no}: empty token in {line!r}; expected `token<TAB>tag`.")
    if tag == "":
        tag = "O"
        stats.missing_tags += 1
    elif not BIO_TAG.fullmatch(tag):
        raise DataError(f"{path}:{line_no}: tag {tag!r} is not a BIO tag; expected O, B-<type> or I-<type>.")
    return token, tag


def read_tweets(path):
    """Read one IMGID-CoNLL file. Returns (list of Tweet, ReadStats).

    A tweet starts with `IMGID:<id>`, then one `token<TAB>tag` line per token; blank lines separate tweets.
    LF, CRLF and CR line ends and a UTF-8 byte-order mark are accepted.
    """
    hint = "Point --data_dir (and the flags that name the files) at the folder that holds the data files."
    text = _decode_utf8(path, read_bytes(path, "data file", hint))
    if not text.strip():
        raise DataError(f"{path}: the file is empty. Expected tweets in IMGID-CoNLL format "
                        f"(`IMGID:<id>`, then `token<TAB>tag` lines).")

    tweets, stats, seen_ids = [], ReadStats(), set()
    current = None          # the Tweet being read
    after_blank = False     # a blank line ended the current tweet
    for line_no, line in enumerate(LINE_END.split(text), start=1):
        if not line.strip(BLANK):
            after_blank = True
            continue
        if not line.strip():
            raise invisible_line_error(path, line_no, line)
        if line.startswith("IMGID:"):
            img_id = parse_id_line(path, line_no, line, stats)
            stats.duplicate_ids += img_id in seen_ids
            seen_ids.add(img_id)
            current = Tweet(img_id, [], [], line_no)
            tweets.append(current)
            after_blank = False
            continue
        if current is None or after_blank:
            where = "before the first" if current is None else "after a blank line without a new"
            raise DataError(f"{path}:{line_no}: token line {line!r} comes {where} `IMGID:<id>` line. Every tweet "
                            f"must start with `IMGID:<id>`.")
        token, tag = parse_token_line(path, line_no, line, stats)
        if tag.startswith("I-"):
            previous = current.tags[-1] if current.tags else "O"
            if previous == "O" or previous[2:] != tag[2:]:
                stats.dangling_inside += 1
        current.tokens.append(token)
        current.tags.append(tag)

    stats.tweets = len(tweets)
    stats.tokens = sum(len(t.tokens) for t in tweets)
    stats.empty_tweets = sum(1 for t in tweets if not t.tokens)
    return tweets, stats


def report_read_stats(path, stats):
    logger.info("%s: %d tweets, %d tokens", path, stats.tweets, stats.tokens)
    if stats.missing_tags:
        logger.warning("%s: %d token lines had no tag and were read as O", path, stats.missing_tags)
    if stats.empty_tweets:
        logger.warning("%s: %d tweets have no tokens (kept, with nothing to tag)", path, stats.empty_tweets)
    if stats.dangling_inside:
        logger.warning("%s: %d I- tags do not continue an entity of their type; seqeval reads each as the start "
                       "of an entity", path, stats.dangling_inside)
    if stats.duplicate_ids:
        logger.warning("%s: %d tweets reuse an image id of an earlier tweet (all kept)", path, stats.duplicate_ids)
    if stats.tagged_id_lines:
        logger.info("%s: %d `IMGID:` lines carry a tag column after the id; it was ignored", path,
                    stats.tagged_id_lines)


# ----------------------------------------------------------------------------------------------------------------
# Token normalisation, the way GloVe-Twitter's preprocessing script treats a tweet, applied to one token

# Every pattern runs on untrusted tokens, so none may backtrack more than linearly: no nested or adjacent
# quantifiers over overlapping characters. GloVe's `www\.(\w+\.)+\S*` is written `www\.\w+\.\S*` (the same
# language under fullmatch, since \S* absorbs further `\w+\.` groups), and its number pattern
# `[-+]?[.\d]*\d+[:,.\d]*` as `[-+]?\.*\d[:,.\d]*` (the same language: before the first digit only dots can stand).
_EYES, _NOSE = r"[8:=;]", r"['`\-]?"
_NORMAL_FORMS = [  # (pattern the whole token must match, replacement), tried in order
    (re.compile(r"https?://\S+|www\.\w+\.\S*", re.I), "<url>"),
    (re.compile(r"@\w+"), "<user>"),
    (re.compile(rf"{_EYES}{_NOSE}[)dD]+|[)dD]+{_NOSE}{_EYES}"), "<smile>"),
    (re.compile(rf"{_EYES}{_NOSE}[pP]+"), "<lolface>"),
    (re.compile(rf"{_EYES}{_NOSE}\(+|\)+{_NOSE}{_EYES}"), "<sadface>"),
    (re.compile(rf"{_EYES}{_NOSE}[/|lL*]"), "<neutralface>"),
    (re.compile(r"<3"), "<heart>"),
    (re.compile(r"[-+]?\.*\d[:,.\d]*"), "<number>"),
]
_ELONGATED = re.compile(r"(.)\1{2,}")          # "sooooo" -> "so" (GloVe: "so <elong>")


@functools.lru_cache(maxsize=1 << 17)  # a data set repeats its tokens: ~113k tokens, ~25k distinct in Twitter-2015
def normalize_token(token):
    """GloVe-Twitter preprocessing of a single token, used for the word vocabulary and word-vector lookup.

    URLs, @users, smileys, hearts and numbers become GloVe's <url>, <user>, <smile>, ... tokens; a #hashtag
    becomes its body (GloVe writes `<hashtag> body`); letters repeated 3+ times collapse to one (GloVe adds
    <elong>); everything is lower-cased. The character CNN still sees the raw token.
    """
    for pattern, replacement in _NORMAL_FORMS:
        if pattern.fullmatch(token):
            return replacement
    if token.startswith("#") and len(token) > 1:
        token = token[1:]
    return _ELONGATED.sub(r"\1", token).lower()


# ----------------------------------------------------------------------------------------------------------------
# Vocabularies

WORD_FORMS = {  # how a token becomes a vocabulary word, and how a vocabulary word is looked up in the vectors
    "glove": (normalize_token, lambda word: word),   # GloVe-Twitter normalisation (this project's default)
    "raw": (lambda token: token, str.lower),          # the authors' code: raw tokens, vectors looked up lower-cased
    "raw_ascii": (lambda token: token, released.py2_lower),  # ... lower-cased as Python 2 did, ASCII letters only
}
CHAR_FORMS = {  # what the char CNN reads of a token, as a string of "characters"
    "text": lambda token: token,                                                   # its Unicode code points
    "bytes": lambda token: token.encode("utf-8", "surrogateescape").decode("latin-1"),  # its UTF-8 bytes, one each
}


@dataclass
class Vocab:
    """Words, characters and tags of a trained model, by index. It travels inside the checkpoint, so a model is
    always scored with the vocabulary it was trained with."""
    words: list          # index -> vocabulary word (see word_form); 0 = PAD, 1 = UNK
    chars: list          # index -> character; 0 = PAD, 1 = UNK
    tags: list           # index -> tag, as found in the training data
    built_from: list = field(default_factory=list)  # the splits whose words are in `words`
    word_form: str = "glove"                        # a key of WORD_FORMS
    char_form: str = "text"                         # a key of CHAR_FORMS

    def __post_init__(self):
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.char_index = {c: i for i, c in enumerate(self.chars)}
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    def word_of(self, token):
        """The vocabulary word a token is looked up as."""
        return WORD_FORMS[self.word_form][0](token)

    def chars_of(self, token):
        """The characters the char vocabulary and the char CNN see of a token."""
        return CHAR_FORMS[self.char_form](token)

    def vector_key(self, word):
        """The word-vector file entry a vocabulary word takes its vector from."""
        return WORD_FORMS[self.word_form][1](word)

    def to_dict(self):
        return {"words": self.words, "chars": self.chars, "tags": self.tags, "built_from": self.built_from,
                "word_form": self.word_form, "char_form": self.char_form}

    @classmethod
    def from_dict(cls, data):
        return cls(data["words"], data["chars"], data["tags"], data["built_from"], data["word_form"],
                   data.get("char_form", "text"))  # checkpoints made before --byte_chars: code points


def _tag_order(tag):
    return (tag != "O", tag[2:], tag[:1])  # O first, then by type, B before I


def build_vocab(tweet_lists, train_tweets, max_words, max_chars, built_from, word_form="glove", char_form="text"):
    """Word and char vocab from the tweets of `tweet_lists`, most frequent first, capped at max_words/max_chars
    (both including PAD and UNK; 0 means no cap). Ties keep first-seen order. Tags come from the training data."""
    to_word, to_chars = WORD_FORMS[word_form][0], CHAR_FORMS[char_form]
    token_counts = Counter()
    for tweets in tweet_lists:
        for tweet in tweets:
            token_counts.update(tweet.tokens)
    word_counts, char_counts = Counter(), Counter()
    for tok, count in token_counts.items():  # distinct tokens in first-seen order: words and chars keep theirs
        word_counts[to_word(tok)] += count
        for c in to_chars(tok):
            char_counts[c] += count
    words = [PAD, UNK] + [w for w, _ in word_counts.most_common()]
    chars = [PAD, UNK] + [c for c, _ in char_counts.most_common()]
    max_words, max_chars = max_words or len(words), max_chars or len(chars)  # 0: no cap
    if len(words) > max_words:
        logger.info("Word vocab: %d types, capped at --word_vocab_size %d", len(words), max_words)
    if len(chars) > max_chars:
        logger.info("Char vocab: %d characters, capped at --char_vocab_size %d", len(chars), max_chars)
    tags = sorted({tag for tweet in train_tweets for tag in tweet.tags}, key=_tag_order)
    if "O" not in tags:
        tags.insert(0, "O")
    return Vocab(words[:max_words], chars[:max_chars], tags, list(built_from), word_form, char_form)


def check_tags_known(path, tweets, vocab):
    """Warn about gold tags that the training data never showed (the model cannot predict them; evaluation still
    counts them as gold entities)."""
    unseen = Counter(tag for tweet in tweets for tag in tweet.tags if tag not in vocab.tag_index)
    if unseen:
        logger.warning("%s: tags never seen in training: %s. Evaluation counts these gold entities; the model "
                       "cannot predict them.", path, dict(unseen))
    return unseen


# ----------------------------------------------------------------------------------------------------------------
# Encoding and batching

@dataclass
class Example:
    """One tweet as tensors of vocabulary indices (already truncated for training if asked)."""
    index: int                # position of the tweet in its file
    word_ids: torch.Tensor    # (L,)
    char_ids: torch.Tensor    # (L, longest word of the tweet, at most max_word_len)
    tag_ids: torch.Tensor     # (L,), -1 for a gold tag the model does not know
    feature_row: int          # row in the FeatureTable (0 = zero feature)


def encode_tweets(tweets, vocab, max_word_len, features=None, max_seq_len=None, keep="first"):
    """Turn tweets into Examples. `max_seq_len` truncates (training only); evaluation passes None and keeps every
    token. `keep` says which words a truncated tweet keeps: the "first" max_seq_len (this project's default) or the
    "last" (the authors' code, Keras' pad_sequences). Tweets with no token are left out of the Examples (there is
    nothing to tag) but stay in `tweets`."""
    unk_word, unk_char = vocab.word_index[UNK], vocab.char_index[UNK]
    rows = features.rows([t.img_id for t in tweets]) if features is not None else [0] * len(tweets)
    unknown_words, truncated = 0, 0
    kept_tweets, words, chars, tag_ids = [], [], [], []  # the ids of all tweets, made into three tensors at once
    ids_of = {}                                            # token -> (word id, character ids): tokens repeat
    for index, (tweet, row) in enumerate(zip(tweets, rows)):
        if not tweet.tokens:
            continue
        tokens, tags = tweet.tokens, tweet.tags
        if max_seq_len is not None and len(tokens) > max_seq_len:
            kept = slice(0, max_seq_len) if keep == "first" else slice(len(tokens) - max_seq_len, len(tokens))
            tokens, tags = tokens[kept], tags[kept]
            truncated += 1
        word_ids, spelt = [], []
        for tok in tokens:
            known = ids_of.get(tok)
            if known is None:
                known = ids_of[tok] = (vocab.word_index.get(vocab.word_of(tok), unk_word),
                                       [vocab.char_index.get(c, unk_char) for c in vocab.chars_of(tok)[:max_word_len]])
            word_ids.append(known[0])
            spelt.append(known[1])
        unknown_words += word_ids.count(unk_word)
        width = max(len(ids) for ids in spelt)
        for ids in spelt:                                                # (L, width) row by row, 0 after the word
            chars += ids
            chars += [0] * (width - len(ids))
        words += word_ids
        tag_ids += [vocab.tag_index.get(tag, -1) for tag in tags]
        kept_tweets.append((index, len(tokens), width, row))
    words, chars, tag_ids = (torch.from_numpy(np.array(ids, dtype=np.int64)) for ids in (words, chars, tag_ids))
    examples, word_at, char_at = [], 0, 0
    for index, length, width, row in kept_tweets:                        # each Example views its share
        examples.append(Example(index, words[word_at:word_at + length],
                                chars[char_at:char_at + length * width].view(length, width),
                                tag_ids[word_at:word_at + length], row))
        word_at, char_at = word_at + length, char_at + length * width
    if truncated:
        logger.info("%d tweets longer than --max_seq_len %d were truncated for training (their %s %d words kept)",
                    truncated, max_seq_len, keep, max_seq_len)
    if unknown_words:
        logger.info("%d tokens are not in the word vocab and use [UNK]", unknown_words)
    return examples


@dataclass
class Batch:
    word_ids: torch.Tensor        # (B, S) long, S = longest tweet in the batch
    char_ids: torch.Tensor        # (B, S, C) long, C = longest word in the batch
    word_mask: torch.Tensor       # (B, S) bool, True at real tokens
    tag_ids: torch.Tensor         # (B, S) long, 0 at pads, -1 for a gold tag the model does not know
    region_feats: torch.Tensor    # (B, 49, 512) float32, or None for the text-only model
    indices: list                 # tweet positions in the file

    def to(self, device):
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.word_ids), move(self.char_ids), move(self.word_mask), move(self.tag_ids),
                     move(self.region_feats), self.indices)


def collate(examples, features=None):
    """Pad a list of Examples to the longest tweet and word among them."""
    batch_size = len(examples)
    seq_len = max(len(ex.word_ids) for ex in examples)
    word_len = max(ex.char_ids.size(1) for ex in examples)
    word_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    char_ids = torch.zeros(batch_size, seq_len, word_len, dtype=torch.long)
    tag_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for b, ex in enumerate(examples):
        n, c = ex.char_ids.shape
        word_ids[b, :n] = ex.word_ids
        tag_ids[b, :n] = ex.tag_ids  # -1 stays -1: a tag the model does not know (ACN.loss refuses it)
        char_ids[b, :n, :c] = ex.char_ids
    lengths = torch.tensor([len(ex.word_ids) for ex in examples])
    word_mask = torch.arange(seq_len)[None, :] < lengths[:, None]  # (B, S)
    region_feats = None
    if features is not None:
        region_feats = features.gather([ex.feature_row for ex in examples])  # (B, 49, 512) float32
    return Batch(word_ids, char_ids, word_mask, tag_ids, region_feats, [ex.index for ex in examples])


def batches(examples, batch_size, features=None, shuffle=False, generator=None, by_length=False):
    """Yield Batches. Training shuffles; evaluation may group tweets of similar length (`by_length`), which changes
    nothing in the results since padding never influences real tokens."""
    if shuffle:
        order = torch.randperm(len(examples), generator=generator).tolist()
    elif by_length:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].word_ids))
    else:
        order = list(range(len(examples)))
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start:start + batch_size]], features)


def num_batches(examples, batch_size):
    return math.ceil(len(examples) / batch_size)


@dataclass
class Split:
    """One data file: its tweets as read, and the Examples that batches are made of."""
    name: str
    path: str
    tweets: list
    stats: ReadStats
    examples: list = field(default_factory=list)

    @property
    def img_ids(self):
        return [t.img_id for t in self.tweets]


def dataset_file(dataset, data_dir, file_name, offline=False):
    """The path of `file_name` in `data_dir`, downloaded first from the public copy of `dataset` (a name of
    downloads.dataset_named) when it is missing and one of that data set's split files."""
    url = downloads.dataset_named(dataset).file_url(file_name)
    return downloads.fetch_file(os.path.join(data_dir, file_name), url, read_tweets,
                                f"point --data_dir at a folder that holds the {dataset} files", offline)


def read_split(name, path):
    tweets, stats = read_tweets(path)
    report_read_stats(path, stats)
    return Split(name, path, tweets, stats)
