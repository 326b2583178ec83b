"""Tweets nobody has tokenised, for --do_predict: tokens with character offsets, the JSONL input, and entities
reported as character offsets into the text the user gave.

Tokens come from NLTK's TweetTokenizer (its own regular expression with its default options, applied to the
text), with changes so that every token is a slice of the original text, `text[start:end] == token`:
  - HTML entities (`&amp;`, `&#39;`) are decoded only for the tokenizer to look at; a token that covers one
    holds the entity as written (`AT&amp;T` -> `AT`, `&amp;`, `T`). The library decodes them and returns `&`.
  - Runs of 4+ equal punctuation marks are tokenised as they are; the library first shortens them to 3
    (`!!!!` -> `!`, `!`, `!`), losing characters.
  - A token never holds whitespace: the library's phone-number and spaced-ellipsis rules can match across
    spaces (`1922 - 2015`, `. . .`); such a match is split at its whitespace, as the training data is.
and one that follows the training data more closely:
  - A word is not cut between two letters or digits that touch: `Trump2016` stays one token (the library gives
    `Trump`, `2016` but keeps `2016Trump` whole).
Case, repeated letters and @handles are left as they are (the library's defaults).

Offsets count Unicode code points of the text as decoded from JSON (a Python str): an emoji outside the Basic
Multilingual Plane is one position, as in Twitter's own entity indices (JavaScript's UTF-16 indices differ).
"""
import html
import html.entities
import json
import os
import re
import sys
from dataclasses import dataclass

from nltk.tokenize import TweetTokenizer
from seqeval.metrics.sequence_labeling import get_entities

from data_loader import DataError, Tweet
from utils import not_a_file

# The library's pattern with its default options (phone numbers are recognised: `617-254-1030` is one token, as
# in the training data; a match across spaces, `1922 - 2015`, is split at them by tokenize()).
TOKEN_PATTERN = TweetTokenizer(match_phone_numbers=True).PHONE_WORD_RE
HTML_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
NON_SPACE = re.compile(r"\S+")


# ----------------------------------------------------------------------------------------------------------------
# Tokens with character offsets

def _decode_entities(text):
    """The text as the tokenizer sees it (HTML entities decoded) and, for each of its characters, the (start, end)
    span of `text` it stands for. An entity that is not a known HTML entity stays as written."""
    if "&" not in text:
        return text, [(i, i + 1) for i in range(len(text))]
    seen, origin, position = [], [], 0
    for match in HTML_ENTITY.finditer(text):
        entity = match.group()
        if not entity.startswith("&#") and entity[1:] not in html.entities.html5:  # unknown name such as &foo;
            continue
        decoded = html.unescape(entity)
        seen.append(text[position:match.start()])
        origin += [(i, i + 1) for i in range(position, match.start())]
        seen.append(decoded)
        origin += [match.span()] * len(decoded)  # every character of the decoded entity stands for all of it
        position = match.end()
    seen.append(text[position:])
    origin += [(i, i + 1) for i in range(position, len(text))]
    return "".join(seen), origin


def _glued(text, previous_end, start):
    """Two tokens touch between two letters or digits (`Trump2016`). The library cuts there only because its
    word-with-apostrophes rule, which takes no digits, is tried before its plain-word rule (it keeps `2016Trump`
    whole); the training data keeps such words whole (`Trump2016`, `Indy500`, `BETAwards17`)."""
    return previous_end == start and text[start - 1].isalnum() and text[start].isalnum()


def tokenize(text):
    """Split a tweet into tokens. Returns [(token, start, end)] with text[start:end] == token, in text order,
    non-overlapping; whitespace is never part of a token.

    Raises TimeoutError (from NLTK's regex guard) on pathological input such as a run of ~20,000 `#`.
    """
    seen, origin = _decode_entities(text)
    spans = []  # (start, end) in `text`
    for match in TOKEN_PATTERN.finditer(seen):
        for piece in NON_SPACE.finditer(match.group()):  # a token never holds whitespace
            start = origin[match.start() + piece.start()][0]
            end = origin[match.start() + piece.end() - 1][1]
            # merge with the previous token when both come from one multi-character entity, or when glued
            if spans and (start < spans[-1][1] or _glued(text, spans[-1][1], start)):
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
    return [(text[start:end], start, end) for start, end in spans]


def tokenizer_agreement(tweets, max_examples=20):
    """How well tokenize() reproduces the tokens of a tokenised data set. Each tweet's gold tokens are joined by
    single spaces and tokenised again; returns (share of tweets whose tokens come back identical, up to
    `max_examples` disagreements as {"img_id", "line", "gold", "tokenized"})."""
    if not tweets:
        raise ValueError("tokenizer_agreement needs at least one tweet")
    same, examples = 0, []
    for tweet in tweets:
        tokenized = [token for token, _, _ in tokenize(" ".join(tweet.tokens))]
        if tokenized == tweet.tokens:
            same += 1
        elif len(examples) < max_examples:
            examples.append({"img_id": tweet.img_id, "line": tweet.line, "gold": tweet.tokens,
                             "tokenized": tokenized})
    return same / len(tweets), examples


# ----------------------------------------------------------------------------------------------------------------
# Reading raw tweets

@dataclass
class RawTweet:
    id: str              # the `id` field, or the 1-based line number when there is none; unique within a file
    text: str            # as given; entity offsets index into it
    image: str | None    # path of the image (a relative path in a JSONL file is resolved against its folder)
    tokens: list         # [(token, start, end)] from tokenize(text)
    line: int            # 1-based line of the JSONL file; 0 for --text


EXAMPLE_LINE = '{"id": "1", "text": "Messi in Paris", "image": "photo.jpg"}'
JSON_TYPES = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null", list: "array",
              dict: "object"}


class BadLine(ValueError):
    """What is wrong with one line of a JSONL file."""


def _parse_line(raw_line, first):
    """One JSONL line -> (id or None, text, image). Raises BadLine."""
    try:
        line = raw_line.decode("utf-8-sig" if first else "utf-8")  # -sig: a byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise BadLine(f"byte {raw_line[exc.start]:#04x} at byte {exc.start} of the line is not UTF-8. Save the "
                      f"file as UTF-8.") from None
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not valid JSON ({exc.msg} at column {exc.colno}). Each line must be one JSON object such "
                      f"as {EXAMPLE_LINE}.") from None
    except RecursionError:
        raise BadLine(f"arrays or objects nested too deeply to read. Each line must be one JSON object such as "
                      f"{EXAMPLE_LINE}.") from None
    except ValueError:  # the only other error json raises: an integer longer than Python converts
        raise BadLine(f"a number of more than {sys.get_int_max_str_digits():,} digits, more than Python reads. "
                      f"Write it as a string (an `id` in quotes).") from None
    if not isinstance(value, dict):
        raise BadLine(f"a JSON {JSON_TYPES[type(value)]}, not an object. Each line must be one JSON object such "
                      f"as {EXAMPLE_LINE}.")
    text = value.get("text")
    if not isinstance(text, str):
        problem = "has no `text`" if "text" not in value else f"has a `text` that is {JSON_TYPES[type(text)]}"
        raise BadLine(f"the object {problem}; `text` must be the tweet as a string (\"\" for an empty tweet).")
    image = value.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise BadLine(f"`image` must be the path of an image file as a non-empty string, or null (or left out) "
                      f"for a tweet without an image; got {json.dumps(image)}.")
    record_id = value.get("id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    elif record_id is not None and (not isinstance(record_id, str) or not record_id.strip()):
        raise BadLine(f"`id` must be a non-empty string or an integer, or left out (the line number is used); "
                      f"got {json.dumps(record_id)}.")
    for key, string in (("text", text), ("image", image), ("id", record_id)):
        position = lone_surrogate(string)
        if position is not None:
            raise BadLine(f"`{key}` holds a lone surrogate, \\u{ord(string[position]):04x} at character {position}: "
                          f"half of a UTF-16 pair escaped without its other half, which is no character and cannot "
                          f"be written out. Escape the whole pair, or write the character itself.")
    return record_id, text, image


def lone_surrogate(string):
    """The position of the first character of `string` (None or a str) that UTF-8 cannot hold: a lone surrogate,
    U+D800..U+DFFF, as a JSON escape such as "\\ud800" or a command-line byte that was not UTF-8 gives. None when
    there is none."""
    if string is None:
        return None
    try:
        string.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def read_jsonl(path):
    """Read raw tweets, one JSON object per line: {"text": str, "image": path or null, "id": str or int}; only
    `text` is required, other keys are ignored. Returns (list of RawTweet, list of error messages).

    A bad line (not UTF-8, not JSON, not an object, `text` missing or not a string, `image` or `id` of the wrong
    type, an `id` an earlier line already has) is skipped with a message naming the file and line; the caller
    reports them all and exits non-zero. Blank lines are skipped. A relative `image` path is resolved against the
    folder of the JSONL file, so the file and its images can be moved together. Raises DataError when the file
    is missing or holds no line at all.
    """
    problem = not_a_file(path)
    if problem:
        raise DataError(f"{path}: {'no such file' if problem == 'does not exist' else f'{problem}, not a file'}. "
                        f"--pred_file must be a JSONL file (one JSON object per line) or an IMGID-CoNLL file.")
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")  # not splitlines(): JSON strings may hold U+2028 etc. as they are
    records, errors, line_of_id, default_ids = [], [], {}, set()
    for line_no, raw_line in enumerate(raw_lines, start=1):
        raw_line = raw_line.rstrip(b"\r")
        if not raw_line.strip():
            continue
        try:
            record_id, text, image = _parse_line(raw_line, first=line_no == 1)
        except BadLine as exc:
            errors.append(f"{path}:{line_no}: {exc}")
            continue
        if record_id is None:
            record_id = str(line_no)
            default_ids.add(record_id)
        if record_id in line_of_id:
            note = " (a line without `id` gets its line number as id)" if record_id in default_ids else ""
            errors.append(f"{path}:{line_no}: id {record_id!r} is already used by line {line_of_id[record_id]}"
                          f"{note}. Give every tweet its own id.")
            continue
        try:
            tokens = tokenize(text)
        except TimeoutError:
            errors.append(f"{path}:{line_no}: the tokenizer gave up on this text ({len(text)} characters); it is "
                          f"likely a very long run of one punctuation mark. Shorten it.")
            continue
        if image is not None and not os.path.isabs(image):
            image = os.path.normpath(os.path.join(os.path.dirname(path), image))
        line_of_id[record_id] = line_no
        records.append(RawTweet(record_id, text, image, tokens, line_no))
    if not records and not errors:
        raise DataError(f"{path}: no tweets in the file. Write one JSON object per line, such as {EXAMPLE_LINE}.")
    return records, errors


def record_from_text(text, image=None, record_id="1"):
    """The tweet of `--text "..." --image photo.jpg` (the image path is taken as given, relative to the current
    folder). Raises DataError when either holds bytes that are not UTF-8 (Python keeps such a byte of the command
    line as a lone surrogate, U+DC80..U+DCFF, which no output can hold)."""
    for flag, string, advice in (("--text", text, "Give the text in UTF-8 (the terminal's or the script's encoding)"),
                                 ("--image", image, "Rename the file so that its name is UTF-8")):
        position = lone_surrogate(string)
        if position is not None:
            code = ord(string[position])
            what = f"byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF else f"the lone surrogate U+{code:04X}"
            raise DataError(f"{flag}: {what} at character {position} is not UTF-8, which the output must be. "
                            f"{advice}.")
    return RawTweet(record_id, text, image, tokenize(text), 0)


def to_tweets(records):
    """data_loader.Tweet objects for the model: the tokens of each record, every tag O, the record id as img_id
    (ids are unique, so image features extracted for the records can be keyed by it)."""
    return [Tweet(record.id, [token for token, _, _ in record.tokens], ["O"] * len(record.tokens), record.line)
            for record in records]


# ----------------------------------------------------------------------------------------------------------------
# Output

def entities_from_tags(text, token_spans, tags):
    """Entities of BIO `tags` over `token_spans` [(token, start, end)] as [{"text", "type", "start", "end"}], with
    character offsets into `text`. Decoding is seqeval's (conlleval rules: an I-X after O or after another type
    starts an entity), so these are the entities the scores count."""
    if len(tags) != len(token_spans):
        raise ValueError(f"{len(tags)} tags for {len(token_spans)} tokens")
    entities = []
    for entity_type, first, last in get_entities(list(tags)):  # token indices, `last` included
        start, end = token_spans[first][1], token_spans[last][2]
        entities.append({"text": text[start:end], "type": entity_type, "start": start, "end": end})
    return entities


TEXT_ONLY = "the model is text-only (trained with --no_img): it reads no image"


def output_record(record, tags, has_image_feature, image_problem=None, text_only=False):
    """The prediction for one RawTweet as a JSON-ready dict: id, text, image, tokens, spans ([start, end] of each
    token), tags, entities, and `image_feature`: "image" (the image's features were used), "zero" (the zero
    feature), with `zero_feature_reason` saying why: no image given, or the image could not be used
    (`image_problem`, required then, says what went wrong); or "none" for a `text_only` model, which reads no
    image (the reason says so)."""
    if len(tags) != len(record.tokens):
        raise ValueError(f"tweet {record.id!r}: {len(tags)} tags for {len(record.tokens)} tokens")
    if has_image_feature and (record.image is None or text_only):
        raise ValueError(f"tweet {record.id!r} has no image or the model is text-only, so it cannot have used an "
                         f"image feature")
    if has_image_feature:
        reason = None
    elif text_only:
        reason = TEXT_ONLY
    elif record.image is None:
        reason = "no image given"
    elif image_problem:
        reason = f"image not usable: {image_problem}"
    else:
        raise ValueError(f"tweet {record.id!r}: say why its image {record.image!r} was not used (image_problem)")
    return {"id": record.id, "text": record.text, "image": record.image,
            "tokens": [token for token, _, _ in record.tokens],
            "spans": [[start, end] for _, start, end in record.tokens],
            "tags": list(tags),
            "entities": entities_from_tags(record.text, record.tokens, tags),
            "image_feature": "image" if has_image_feature else "none" if text_only else "zero",
            "zero_feature_reason": reason}


# Characters that some readers take for the end of a line (Python's str.splitlines, JavaScript's line terminators)
# though JSON lets them stand in a string: written as \u escapes, every reader sees one record per line.
LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def format_jsonl(outputs):
    """Output records as JSONL text, one object per line, characters as they are (not \\u escapes) except U+0085,
    U+2028 and U+2029, which are escaped (json already escapes every other line break)."""
    return "".join(json.dumps(output, ensure_ascii=False).translate(LINE_BREAKS) + "\n" for output in outputs)
