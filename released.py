"""The authors' released data pipeline and scorer, reproduced exactly, quirks included.

The released code is `jinlanfu/NERmultimodal` (Python 2, Keras 1.2 on Theano). Nothing here is copied from it;
each function below re-implements one behaviour of it in our own words and names the file and function it follows:

- `load_data_multimodal.py: load_sentence` - the reader: tweets closed at blank lines, one list of image ids in
  file order, `datasplit` built from image counts, and a last `sentences.append` that runs once after all files.
- `multimodal_ner.py` (its `__main__` block) - `x`, `img_x` and `y` sliced by `datasplit`, which pairs slot i of a
  split with image i of that split; Keras 1.x `Model.predict` takes the sample count from its first input
  (`_predict_loop`: `len(ins[0])`) and checks no other input's length, so an extra image per split goes unnoticed.
- `ner_evaluate.py: evaluate, get_chunks, get_chunk_type` - the scorer: the last 35 tokens of each tweet, chunks
  with the pad label '0' as a chunk type of its own, P/R/F1 that are 0 whenever nothing is correct.
- `load_data_multimodal.py: vocab_bulid, pad_sequence` - characters are the bytes of Python 2 byte strings, words
  cut at 30 of them.
- `load_data_multimodal.py: load_word_matrix` - the word matrix: row 0 (`PAD`) gets the vector of "pad" or a
  uniform(-0.25, 0.25) draw, and one row more than the vocabulary, never looked up, stays zero.

The functions keep no state (the one random draw uses the `rng` passed in) and work on our own data structures:
tokens, tags and image ids are `str`. Files are read as bytes, as Python 2's `open(path, 'r')` gave them, and
decoded from UTF-8 with `surrogateescape`, so `byte_chars` can give back the exact bytes.
"""
from collections import namedtuple

SPLITS = ("train", "dev", "test")
IMAGE_MARK = b"IMGID"  # load_sentence: `if IMAGEID in line` - a substring test, anywhere in the line
IMAGE_ID_START = 6  # load_sentence: the id is `line[6:]`, i.e. whatever follows the six bytes "IMGID:"
PAD_LABEL = "0"  # load_data_multimodal.py: label_index gives '0' index 0, the label of every pad position
OUTSIDE = "O"  # ner_evaluate.py: get_chunks treats tags['O'] as the only "no chunk" label
WINDOW = 35  # multimodal_ner.py: sent_maxlen; Keras pad_sequences keeps the last 35 words of a longer tweet
WORD_BYTES = 30  # multimodal_ner.py / pad_sequence: word_maxlen, characters (bytes) per word
PAD_WORD = "PAD"  # vocab_bulid: vocb['PAD'] = 0, set after the counted words (it overwrites a real token "PAD")

ReleasedRead = namedtuple("ReleasedRead", "sentences img_ids datasplit origins")
ReleasedRead.__doc__ = """What `released_sentences` read.

sentences: list of tweets as the released reader closed them, each a list of (token, tag); tag is None for a line
    without a tab (the released `vocab_bulid` would then fail on `word_label[1]`).
img_ids: every image id, in file order (train, dev, test).
datasplit: [0, images in train, images in train+dev, all images] - counts of images, not of sentences.
origins: for each sentence, the tweets it was made of, as (split, index of the tweet in its file) in reading
    order; a tweet counts when its IMGID line or one of its token lines was read while the sentence was open.
    Lines before a file's first IMGID line belong to tweet -1 of that file."""

Slot = namedtuple("Slot", "tokens tags img_id origins")
Slot.__doc__ = """One row of a released split: the tokens and tags it was given, the image id it was paired with (slot i
of a split gets image i of that split, i.e. the image of tweet i of that file), and the tweets (split, index in
file) its tokens came from. The slot is correctly paired only when origins == ((split, i),)."""

AuthorsScore = namedtuple("AuthorsScore", "precision recall f1 accuracy tweets tokens gold_entities "
                                          "predicted_entities correct_entities")
AuthorsScore.__doc__ = """The released evaluator's numbers (`ner_evaluate.py: evaluate`) and what they counted: tweets,
tokens in the scored windows, gold / predicted / correct chunks in those windows (a predicted '0' chunk counts
as predicted). accuracy is the token accuracy over the windows, as `evaluate` returns it."""


def _text(raw):
    """Bytes of the file as our `str` (UTF-8, undecodable bytes kept as surrogates, so encoding gives them back)."""
    return raw.decode("utf-8", "surrogateescape")


def released_sentences(paths):
    """Read the train, dev and test IMGID-CoNLL files, in that order, as `load_sentence` did under Python 2.

    - Lines are split at b'\\n' only and stripped on the right of ASCII whitespace (Python 2 `str.rstrip` on byte
      strings); a line that is then empty closes the open sentence - even an empty one, so two blank lines in a row
      give an empty sentence.
    - A line containing b'IMGID' anywhere appends `line[6:]` to the image ids and never becomes a token; any other
      line is split at tabs into (token, tag).
    - The sentence still open at the end of a file is NOT closed there: the final append is indented with 8 spaces
      among tab-indented lines, which Python 2 reads as one level, the level of the loop over files, so it runs once,
      after the third file. A file without a trailing blank line therefore merges its last tweet with the next
      file's first tweet.
    - datasplit gets the number of images read so far before each file, and once more after the last one.
    Returns a `ReleasedRead`.
    """
    paths = list(paths)
    if len(paths) != len(SPLITS):
        raise ValueError(f"released_sentences reads exactly three files (train, dev, test), got {len(paths)}")
    sentences, img_ids, datasplit, origins = [], [], [], []
    sentence, sentence_origins = [], []

    def note(origin):
        if origin not in sentence_origins:
            sentence_origins.append(origin)

    for split, path in zip(SPLITS, paths):
        datasplit.append(len(img_ids))  # load_sentence: appended at the top of the loop over the three files
        tweet = -1
        with open(path, "rb") as handle:  # Python 2 open(..., 'r') on Linux: bytes, lines end at b'\n'
            for raw in handle:
                line = raw.rstrip()  # bytes.rstrip strips b' \t\n\r\x0b\x0c', as Python 2 str.rstrip did
                if not line:
                    sentences.append(sentence)
                    origins.append(tuple(sentence_origins))
                    sentence, sentence_origins = [], []
                elif IMAGE_MARK in line:
                    tweet += 1
                    img_ids.append(_text(line[IMAGE_ID_START:]))
                    note((split, tweet))
                else:
                    fields = line.split(b"\t")
                    sentence.append((_text(fields[0]), _text(fields[1]) if len(fields) > 1 else None))
                    note((split, tweet))
    sentences.append(sentence)  # once, after all three files (the 8-space line of load_sentence)
    origins.append(tuple(sentence_origins))
    datasplit.append(len(img_ids))
    return ReleasedRead(sentences, img_ids, datasplit, origins)


def released_pairing(read):
    """Slice a `ReleasedRead` into train, dev and test as `multimodal_ner.py` does, pairing slot i of a split with
    image i of the same split.

    train = sentences[:datasplit[1]], dev = sentences[datasplit[1]:datasplit[2]], test = sentences[datasplit[2]:]
    (to the end, whatever datasplit[3] says), and the image lists sliced by the same bounds. Returns
    {split: [Slot, ...]}.

    A split with fewer sentences than images simply leaves its last images unused (Keras 1.x predict counts samples
    by the word input only). A split with more sentences than images is an error, as it was for the released script
    (train: Keras' fit checks that its inputs have equal lengths; dev and test: indexing the image array fails).
    """
    bounds = read.datasplit
    if len(bounds) != 4:
        raise ValueError(f"datasplit must have 4 entries, got {bounds}")
    cuts = {"train": (0, bounds[1]), "dev": (bounds[1], bounds[2]), "test": (bounds[2], None)}
    pairing = {}
    for split in SPLITS:
        start, stop = cuts[split]
        sentences = read.sentences[start:stop]
        origins = read.origins[start:stop]
        images = read.img_ids[start:stop]
        if len(sentences) > len(images):
            raise ValueError(
                f"the released pipeline would fail here: {split} has {len(sentences)} sentences for {len(images)} "
                "images (a trailing blank line in a file adds an empty sentence, or a split lacks IMGID lines)")
        pairing[split] = [Slot([token for token, _ in sentence], [tag for _, tag in sentence], img_id, origin)
                          for sentence, origin, img_id in zip(sentences, origins, images)]
    return pairing


def released_chunks(tags):
    """Chunks of one tag sequence as `ner_evaluate.py: get_chunks` finds them: a list of (type, start, end).

    'O' closes the open chunk. Any other tag has class tag.split('-')[0] and type tag.split('-')[-1], so the pad
    label '0' is a tag of class '0' and type '0': it opens a chunk of its own type (closing an entity chunk before
    it), and a run of '0's is one chunk. A tag opens a new chunk when no chunk is open, when its type differs from
    the open chunk's, or when its class is 'B'; so I-X after O (or after '0') starts an X chunk.
    """
    chunks = []
    kind, start = None, None
    for i, tag in enumerate(tags):
        if tag == OUTSIDE:
            if kind is not None:
                chunks.append((kind, start, i))
                kind, start = None, None
            continue
        tag_class, tag_type = tag.split("-")[0], tag.split("-")[-1]
        if kind is None:
            kind, start = tag_type, i
        elif tag_type != kind or tag_class == "B":
            chunks.append((kind, start, i))
            kind, start = tag_type, i
    if kind is not None:
        chunks.append((kind, start, len(tags)))
    return chunks


def authors_score(gold_tag_seqs, predicted_tag_seqs, window=WINDOW):
    """Score as `ner_evaluate.py: evaluate` does.

    Each tweet is scored on its last min(n, window) tokens only - the window `evaluate` derives from the non-zero
    word ids of the front-padded, front-truncated input; tokens before it are not seen. Gold and predicted chunks
    (`released_chunks`) are compared as sets per tweet. A predicted pad label '0' on a real token is a chunk of
    type '0': it counts as a prediction (never correct) and cuts the entity chunk it follows.
    precision = correct / predicted, recall = correct / gold, F1 their harmonic mean - but all three are 0 whenever
    no chunk is correct (so 0 predictions give 0, not a division error).

    gold_tag_seqs: the tags of every token of each tweet. predicted_tag_seqs: per tweet, either one tag per token
    (the window is cut from it here) or already only the window's min(n, window) tags (the positions of a
    35-long padded prediction that `evaluate` reads). An empty tweet is an error: `evaluate` fails on it
    (`np.nonzero` of an all-pad row has no first element).
    """
    if len(gold_tag_seqs) != len(predicted_tag_seqs):
        raise ValueError(f"{len(gold_tag_seqs)} gold tweets but {len(predicted_tag_seqs)} predicted")
    correct = predicted = gold_total = tokens = right_tokens = 0
    for number, (gold, pred) in enumerate(zip(gold_tag_seqs, predicted_tag_seqs)):
        gold, pred = list(gold), list(pred)
        if not gold:
            raise ValueError(f"tweet {number} is empty: the released evaluate fails on an all-pad row")
        length = min(len(gold), window)
        if len(pred) not in (len(gold), length):
            raise ValueError(f"tweet {number}: {len(pred)} predicted tags for {len(gold)} tokens "
                             f"(expected {len(gold)} or the window's {length})")
        gold, pred = gold[-length:], pred[-length:]
        tokens += length
        right_tokens += sum(g == p for g, p in zip(gold, pred))
        gold_chunks, pred_chunks = set(released_chunks(gold)), set(released_chunks(pred))
        correct += len(gold_chunks & pred_chunks)
        predicted += len(pred_chunks)
        gold_total += len(gold_chunks)
    precision = correct / predicted if correct > 0 else 0.0
    recall = correct / gold_total if correct > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct > 0 else 0.0
    accuracy = right_tokens / tokens if tokens else float("nan")  # np.mean of an empty list is nan too
    return AuthorsScore(precision, recall, f1, accuracy, len(gold_tag_seqs), tokens, gold_total, predicted, correct)


def byte_chars(token, max_len=WORD_BYTES):
    """The characters of `token` as the released code saw them: its UTF-8 bytes (Python 2 byte strings iterate by
    byte), as a list of ints 0-255, cut to the first `max_len` bytes (`pad_sequence` keeps `w_c[:word_maxlen]`; the
    cut may fall inside a multi-byte character). max_len=None keeps every byte - what `vocab_bulid` counts when it
    builds the character vocabulary."""
    raw = token.encode("utf-8", "surrogateescape")
    return list(raw if max_len is None else raw[:max_len])


def char_inventories(sentences):
    """(distinct bytes, distinct code points) over every token of `sentences` (lists of (token, tag)): the released
    character vocabulary (`vocab_bulid`, bytes of whole tokens) next to the one a Unicode reader would build."""
    byte_set, code_points = set(), set()
    for sentence in sentences:
        for token, _ in sentence:
            byte_set.update(byte_chars(token, max_len=None))
            code_points.update(token)
    return byte_set, code_points


def py2_lower(word):
    """`str.lower` of a Python 2 byte string: only ASCII A-Z are lowered (`load_word_matrix` looks words up in the
    word2vec model as `word.lower()`); 'É' stays 'É'."""
    return word.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape")


def _generator(rng):
    """`rng` itself, or a fresh unseeded numpy Generator (the released code never seeds numpy)."""
    import numpy as np
    return np.random.default_rng() if rng is None else rng


def pad_row_vector(vectors, dim=200, rng=None):
    """Row 0 of the released word matrix, the row of `PAD` (`load_word_matrix`): the vector of "pad" (`'PAD'.lower()`)
    when `vectors` (a mapping word -> vector) has it, else a uniform(-0.25, 0.25) draw from `rng` (a numpy
    Generator) - never zeros. Every leading pad position of every tweet looks this row up, and the embedding is
    trainable, so it is learnt like any word."""
    import numpy as np
    key = py2_lower(PAD_WORD)
    if key in vectors:
        return np.asarray(vectors[key], dtype=np.float64).reshape(dim)
    return _generator(rng).uniform(-0.25, 0.25, dim)


def released_word_matrix(word_index, vectors, dim=200, rng=None):
    """The word matrix as `load_word_matrix` builds it from `word_index` (word -> row, with 'PAD' -> 0, as
    `vocab_bulid` makes it): len(word_index) + 1 rows of zeros; every word's row is the vector of `py2_lower(word)`
    when `vectors` has it, else uniform(-0.25, 0.25) - so row 0 is `pad_row_vector`. The last row, index
    len(word_index), belongs to no word: it stays zero and is never looked up (`multimodal_ner.py` sizes the
    Embedding as len(vocb) + 1 to match). (Were "PAD" also a token of the data, `vocab_bulid`'s 'PAD' -> 0 would
    take it over, leaving its counted row, not the last one, as the unused zero row; Twitter-2015 has no such
    token.) The released code draws in Python 2 dict order, which cannot be reproduced; here the draws go in row
    order."""
    import numpy as np
    rng = _generator(rng)
    matrix = np.zeros((len(word_index) + 1, dim))
    for word, row in sorted(word_index.items(), key=lambda item: item[1]):
        key = py2_lower(word)
        matrix[row] = np.asarray(vectors[key], dtype=np.float64).reshape(dim) if key in vectors \
            else rng.uniform(-0.25, 0.25, dim)
    return matrix
