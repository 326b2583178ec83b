"""Twitter-2015 data for ACN: the IMGID-CoNLL reader, token normalisation, vocabularies, word vectors,
cached VGG16 image features, and padded batches.

Nothing here drops data silently: every substitution (a missing tag read as O, a tweet with no image feature,
an unknown word) is counted and reported, and anything malformed stops with a DataError that names the file
and line (or the image id) and says what to do.
"""
import ctypes
import json
import logging
import math
import mmap
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"  # index 0 and 1 of the word and char vocabularies
NUM_REGIONS, REGION_DIM = 49, 512  # VGG16 pool5 for a 224 x 224 image: 7 x 7 regions of 512 channels
VOCAB_FILE = "vocab.json"


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


def read_tweets(path):
    """Read one IMGID-CoNLL file. Returns (list of Tweet, ReadStats).

    A tweet starts with `IMGID:<id>`, then one `token<TAB>tag` line per token; blank lines separate tweets.
    CRLF line ends and a UTF-8 byte-order mark are accepted.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file. Point --data_dir (and --train_file/--dev_file/--test_file) at the "
                        f"folder that holds the Twitter-2015 files.")
    with open(path, "rb") as f:
        text = _decode_utf8(path, f.read())
    if not text.strip():
        raise DataError(f"{path}: the file is empty. Expected tweets in IMGID-CoNLL format "
                        f"(`IMGID:<id>`, then `token<TAB>tag` lines).")

    tweets, stats, seen_ids = [], ReadStats(), set()
    current = None          # the Tweet being read
    after_blank = False     # a blank line ended the current tweet
    for line_no, line in enumerate(text.split("\n"), start=1):  # not splitlines(): tokens may hold U+2028 etc.
        line = line.rstrip("\r")
        if not line.strip():
            after_blank = True
            continue
        if line.startswith("IMGID:"):
            img_id = line[len("IMGID:"):].strip()
            if not img_id:
                raise DataError(f"{path}:{line_no}: `IMGID:` has no id after it.")
            if img_id in seen_ids:
                stats.duplicate_ids += 1
            seen_ids.add(img_id)
            current = Tweet(img_id, [], [], line_no)
            tweets.append(current)
            after_blank = False
            continue
        if current is None or after_blank:
            where = "before the first" if current is None else "after a blank line without a new"
            raise DataError(f"{path}:{line_no}: token line {line!r} comes {where} `IMGID:<id>` line. Every tweet "
                            f"must start with `IMGID:<id>`.")
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


# ----------------------------------------------------------------------------------------------------------------
# Token normalisation, the way GloVe-Twitter's preprocessing script treats a tweet, applied to one token

_EYES, _NOSE = r"[8:=;]", r"['`\-]?"
_NORMAL_FORMS = [  # (pattern the whole token must match, replacement), tried in order
    (re.compile(r"https?://\S+|www\.(\w+\.)+\S*", re.I), "<url>"),
    (re.compile(r"@\w+"), "<user>"),
    (re.compile(rf"{_EYES}{_NOSE}[)dD]+|[)dD]+{_NOSE}{_EYES}"), "<smile>"),
    (re.compile(rf"{_EYES}{_NOSE}[pP]+"), "<lolface>"),
    (re.compile(rf"{_EYES}{_NOSE}\(+|\)+{_NOSE}{_EYES}"), "<sadface>"),
    (re.compile(rf"{_EYES}{_NOSE}[/|lL*]"), "<neutralface>"),
    (re.compile(r"<3"), "<heart>"),
    (re.compile(r"[-+]?[.\d]*\d+[:,.\d]*"), "<number>"),
]
_ELONGATED = re.compile(r"(.)\1{2,}")          # "sooooo" -> "so" (GloVe: "so <elong>")


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

@dataclass
class Vocab:
    words: list          # index -> normalised word; 0 = PAD, 1 = UNK
    chars: list          # index -> character; 0 = PAD, 1 = UNK
    tags: list           # index -> tag, as found in the training data
    built_from: list = field(default_factory=list)

    def __post_init__(self):
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.char_index = {c: i for i, c in enumerate(self.chars)}
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    def save(self, vocab_dir):
        from utils import atomic_write_text
        data = {"words": self.words, "chars": self.chars, "tags": self.tags, "built_from": self.built_from}
        atomic_write_text(os.path.join(vocab_dir, VOCAB_FILE), json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, vocab_dir):
        path = os.path.join(vocab_dir, VOCAB_FILE)
        if not os.path.isfile(path):
            raise DataError(f"{path}: no vocabulary there. Train first (--do_train writes it), or point --vocab_dir "
                            f"at the folder of the run you want to evaluate.")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return cls(data["words"], data["chars"], data["tags"], data.get("built_from", []))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a vocabulary file written by this code ({exc}). Delete it and train "
                            f"again.") from None


def _tag_order(tag):
    return (tag != "O", tag[2:], tag[:1])  # O first, then by type, B before I


def build_vocab(tweet_lists, train_tweets, max_words, max_chars, built_from):
    """Word and char vocab from the tweets of `tweet_lists`, most frequent first, capped at max_words/max_chars
    (both including PAD and UNK). Ties keep first-seen order. Tags come from the training data."""
    word_counts, char_counts = Counter(), Counter()
    for tweets in tweet_lists:
        for tweet in tweets:
            word_counts.update(normalize_token(tok) for tok in tweet.tokens)
            for tok in tweet.tokens:
                char_counts.update(tok)
    words = [PAD, UNK] + [w for w, _ in word_counts.most_common()]
    chars = [PAD, UNK] + [c for c, _ in char_counts.most_common()]
    if len(words) > max_words:
        logger.info("Word vocab: %d types, capped at --word_vocab_size %d", len(words), max_words)
    if len(chars) > max_chars:
        logger.info("Char vocab: %d characters, capped at --char_vocab_size %d", len(chars), max_chars)
    tags = sorted({tag for tweet in train_tweets for tag in tweet.tags}, key=_tag_order)
    if "O" not in tags:
        tags.insert(0, "O")
    return Vocab(words[:max_words], chars[:max_chars], tags, built_from)


def check_tags_known(path, tweets, vocab):
    """Warn about gold tags that the training data never showed (the model cannot predict them; evaluation still
    counts them as gold entities)."""
    unseen = Counter(tag for tweet in tweets for tag in tweet.tags if tag not in vocab.tag_index)
    if unseen:
        logger.warning("%s: tags never seen in training: %s. Evaluation counts these gold entities; the model "
                       "cannot predict them.", path, dict(unseen))
    return unseen


# ----------------------------------------------------------------------------------------------------------------
# Word vectors

def load_word_vectors(path, vocab, dim, max_bad_fraction=0.01, seed=7):
    """Embedding matrix (len(vocab.words), dim) for the vocab from a GloVe or word2vec text file (with or without
    the `count dim` header). Words without a vector get uniform(-0.25, 0.25), PAD gets zeros. Malformed lines are
    skipped and counted; more than `max_bad_fraction` of them is an error. The first vector of a word wins."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: word-vector file not found. Put it there (--wordvec_dir/--w2v_file) or train "
                        f"with random word embeddings: --no_w2v.")
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.empty(len(vocab.words), dim).uniform_(-0.25, 0.25, generator=generator)
    matrix[0] = 0.0
    found = torch.zeros(len(vocab.words), dtype=torch.bool)
    lines = bad = duplicates = 0
    first_bad = None
    with open(path, encoding="utf-8-sig", errors="strict") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            if line_no == 1 and re.fullmatch(r"\d+ \d+", line.strip()):  # word2vec header: `count dim`
                header_dim = int(line.split()[1])
                if header_dim != dim:
                    raise DataError(f"{path}:1: the header says {header_dim}-d vectors but --word_emb_dim is {dim}. "
                                    f"Use --word_emb_dim {header_dim} or vectors of {dim} dimensions.")
                continue
            lines += 1
            word, _, rest = line.rstrip().partition(" ")
            values = rest.split(" ")
            if len(values) != dim:
                if lines == 1:
                    raise DataError(f"{path}:{line_no}: {len(values)}-d vector but --word_emb_dim is {dim}. Use "
                                    f"--word_emb_dim {len(values)} or vectors of {dim} dimensions.")
                bad += 1
                first_bad = first_bad or line_no
                continue
            index = vocab.word_index.get(word)
            if index is None or index == 0:
                continue
            if found[index]:
                duplicates += 1
                continue
            try:
                vector = torch.tensor([float(v) for v in values])
            except ValueError:
                bad += 1
                first_bad = first_bad or line_no
                continue
            if not torch.isfinite(vector).all():
                bad += 1
                first_bad = first_bad or line_no
                continue
            matrix[index] = vector
            found[index] = True
    if lines == 0:
        raise DataError(f"{path}: no vectors in the file. Expected `word v1 ... v{dim}` lines, or use --no_w2v.")
    if bad > max_bad_fraction * lines:
        raise DataError(f"{path}: {bad} of {lines} lines are malformed (first at line {first_bad}); expected "
                        f"`word` and {dim} numbers separated by spaces.")
    if bad:
        logger.warning("%s: skipped %d malformed lines (first at line %d)", path, bad, first_bad)
    if duplicates:
        logger.warning("%s: %d words appear more than once; the first vector was kept", path, duplicates)
    covered = int(found.sum())
    logger.info("Word vectors: %d of %d vocab words found in %s (%.1f%%); the rest are random", covered,
                len(vocab.words) - 2, path, 100.0 * covered / max(1, len(vocab.words) - 2))
    return matrix


# ----------------------------------------------------------------------------------------------------------------
# Image features

def _release_pages(tensor, mapped_range):
    """Let the kernel take back the resident pages of a tensor that views a memory-mapped, read-only file.

    The data stays in the OS page cache (evictable), so the next read costs a page fault, not a disk read; the
    process's resident memory no longer holds it. A read fault also maps up to 64 KiB of neighbouring cached pages
    ("fault-around"), so the release reaches that far on both sides, clamped to `mapped_range`, the part of the
    file mapping that holds the tensors: clean pages of a read-only file mapping are simply read again when next
    used, whereas MADV_DONTNEED on ordinary memory would discard its data."""
    if _LIBC is None:
        return
    low, high = mapped_range
    start = tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size()
    end = start + tensor.numel() * tensor.element_size()
    first = max(low, (start - _FAULT_AROUND) // _PAGE * _PAGE)
    last = min(high, -(-(end + _FAULT_AROUND) // _PAGE) * _PAGE)
    _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def _span(tensors):
    """(first, last) page-aligned addresses covering the storages of `tensors`, all views of one file mapping."""
    starts = [t.untyped_storage().data_ptr() for t in tensors]
    ends = [s + t.untyped_storage().nbytes() for s, t in zip(starts, tensors)]
    return min(starts) // _PAGE * _PAGE, -(-max(ends) // _PAGE) * _PAGE


_PAGE = mmap.PAGESIZE
_FAULT_AROUND = 64 * 1024  # Linux's default fault_around_bytes
_MADV_DONTNEED = 4
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


@dataclass
class FeatureTable:
    """The image features of a run, one (49, 512) tensor per image, and row 0 the zero feature given to tweets
    whose image has none. The tensors are views of the memory-mapped feature file: nothing is copied at load, a
    batch gathers its rows (converted to float32) and then releases their pages, so the ~0.4-0.8 GB of features
    live in the OS page cache rather than in the process."""
    regions: list             # row -> (49, 512) tensor (a view of the mapped file, or of memory if not mappable)
    row_of: dict              # image id (str) -> row
    missing_ids: list         # ids asked for and not in the file
    mapped_range: tuple = None  # (first, last) address of the file mapping the views point into, if mapped

    def rows(self, img_ids):
        return [self.row_of.get(img_id, 0) for img_id in img_ids]

    def gather(self, rows):
        region_feats = torch.stack([self.regions[row] for row in rows]).float()  # (B, 49, 512)
        if self.mapped_range is not None:
            for row in rows:
                if row:
                    _release_pages(self.regions[row], self.mapped_range)
        return region_feats


def _as_regions(path, img_id, value):
    """Check one feature and return it as a (49, 512) view, regions in row-major order of the 7 x 7 grid."""
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: the feature of image id {img_id!r} is a {type(value).__name__}, not a tensor. "
                        f"Re-extract the features with save_vgg_feature.py.")
    if value.dtype not in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        raise DataError(f"{path}: the feature of image id {img_id!r} has dtype {value.dtype}; expected float16 or "
                        f"float32. Re-extract it with save_vgg_feature.py.")
    if tuple(value.shape) == (REGION_DIM, 7, 7):
        value = value.reshape(REGION_DIM, NUM_REGIONS).t()  # (49, 512), a view: region r is grid cell (r // 7, r % 7)
    elif tuple(value.shape) != (NUM_REGIONS, REGION_DIM):
        raise DataError(f"{path}: the feature of image id {img_id!r} has shape {tuple(value.shape)}; expected "
                        f"(49, 512) or (512, 7, 7) (VGG16 pool5). Re-extract it with save_vgg_feature.py.")
    if not torch.isfinite(value).all():
        raise DataError(f"{path}: the feature of image id {img_id!r} contains NaN or inf values. Re-extract it with "
                        f"save_vgg_feature.py.")
    return value


def load_image_features(path, img_ids):
    """Open the features of `img_ids` in a torch file mapping image id -> (49, 512) or (512, 7, 7) tensor
    (float16 or float32; keys ints or strings, matched as strings). Every feature used is checked (shape, dtype,
    finite values). Ids with no feature get the zero row and are counted."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: image-feature file not found. Extract it with save_vgg_feature.py, pass "
                        f"--img_feature_file, or train text-only with --no_img.")
    mapped = True
    try:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            mapped, stored = False, torch.load(path, map_location="cpu", weights_only=True)  # legacy torch format
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean the same to a user
        raise DataError(f"{path}: not a readable torch file ({type(exc).__name__}: {str(exc)[:200]}). Re-extract it "
                        f"with save_vgg_feature.py or download it again.") from None
    if not isinstance(stored, dict):
        raise DataError(f"{path}: holds a {type(stored).__name__}; expected a dict mapping image id -> (49, 512) "
                        f"tensor. Re-extract it with save_vgg_feature.py.")
    by_id = {str(key): key for key in stored}
    wanted = list(dict.fromkeys(img_ids))  # unique, first-seen order
    present = [img_id for img_id in wanted if img_id in by_id]
    missing = [img_id for img_id in wanted if img_id not in by_id]

    regions = [torch.zeros(NUM_REGIONS, REGION_DIM)]
    mapped_range = _span([v for v in stored.values() if isinstance(v, torch.Tensor)]) if mapped and present else None
    for img_id in present:
        regions.append(_as_regions(path, img_id, stored[by_id[img_id]]))
        if mapped_range is not None:
            _release_pages(regions[-1], mapped_range)  # the check above read it; give the pages back
    row_of = {img_id: row for row, img_id in enumerate(present, start=1)}
    if missing:
        logger.warning("%s: %d of %d image ids have no feature; their tweets get a zero feature and stay in the data"
                       "%s", path, len(missing), len(wanted), "" if logger.isEnabledFor(logging.DEBUG)
                       else " (--verbose lists them)")
        logger.debug("Image ids without a feature: %s", " ".join(missing))
    return FeatureTable(regions, row_of, missing, mapped_range)


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


def encode_tweets(tweets, vocab, max_word_len, features=None, max_seq_len=None):
    """Turn tweets into Examples. `max_seq_len` truncates (training only); evaluation passes None and keeps every
    token. Tweets with no token are left out of the Examples (there is nothing to tag) but stay in `tweets`."""
    unk_word, unk_char = vocab.word_index[UNK], vocab.char_index[UNK]
    rows = features.rows([t.img_id for t in tweets]) if features is not None else [0] * len(tweets)
    examples, unknown_words, truncated = [], 0, 0
    for index, (tweet, row) in enumerate(zip(tweets, rows)):
        if not tweet.tokens:
            continue
        tokens, tags = tweet.tokens, tweet.tags
        if max_seq_len is not None and len(tokens) > max_seq_len:
            tokens, tags = tokens[:max_seq_len], tags[:max_seq_len]
            truncated += 1
        word_ids = [vocab.word_index.get(normalize_token(tok), unk_word) for tok in tokens]
        unknown_words += word_ids.count(unk_word)
        char_ids = torch.zeros(len(tokens), min(max_word_len, max(len(tok) for tok in tokens)), dtype=torch.long)
        for t, tok in enumerate(tokens):
            char_ids[t, :len(tok)] = torch.tensor([vocab.char_index.get(c, unk_char) for c in tok[:max_word_len]])
        tag_ids = torch.tensor([vocab.tag_index.get(tag, -1) for tag in tags])
        examples.append(Example(index, torch.tensor(word_ids), char_ids, tag_ids, row))
    if truncated:
        logger.info("%d tweets longer than --max_seq_len %d were truncated for training", truncated, max_seq_len)
    if unknown_words:
        logger.info("%d tokens are not in the word vocab and use [UNK]", unknown_words)
    return examples


@dataclass
class Batch:
    word_ids: torch.Tensor        # (B, S) long, S = longest tweet in the batch
    char_ids: torch.Tensor        # (B, S, C) long, C = longest word in the batch
    word_mask: torch.Tensor       # (B, S) bool, True at real tokens
    tag_ids: torch.Tensor         # (B, S) long, 0 at pads
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
        tag_ids[b, :n] = ex.tag_ids.clamp(min=0)
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


def read_split(name, path):
    tweets, stats = read_tweets(path)
    report_read_stats(path, stats)
    return Split(name, path, tweets, stats)
