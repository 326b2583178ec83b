"""raw_tweets: tokens with character offsets, the JSONL reader, entities and output records for raw tweets."""
import json
import os
import re

import pytest
from nltk.tokenize import TweetTokenizer

import data_loader as data
import raw_tweets
from raw_tweets import RawTweet, entities_from_tags, output_record, read_jsonl, tokenize

TRICKY_TEXTS = [
    "",
    "   \t ",
    "RT @JayKenMinaj_: Me outside of where George Zimmerman got shot at. God is so good. http://t.co/Z3neVBQ7vF",
    "Kawhi Leonard wins the fan vote #NBA #NBAFinals2017 via @espn https://t.co/AbC123xyz?x=1&y=2",
    "I ❤️ NY 😂😂 🇫🇷 👍🏽 1️⃣",
    "family 👩\u200d❤\ufe0f\u200d👨 and 👨\u200d👩\u200d👧\u200d👦 at home",       # ZWJ sequences
    "Cafe\u0301 in Zu\u0308rich, \u0301 a lone combining mark",              # combining characters
    "東京 と 北京 で 会議 ، مرحبا بالعالم — Ελλάδα, Россия",                  # multi-byte, right-to-left
    "AT&amp;T &lt;3 &#39;quoted&#39; &#x1F600; &foo; x&nbsp;y &NotEqualTilde;",   # HTML entities
    "Wow!!!!!! ...... . . . 1922 - 2015 call 617-254-1030 or (330) 672-7700",
    "Trump2016 2016Trump #Trump2016 RT@Gizmodo e-mail me@example.com",
    "line one\r\nline two\u2028three\u00a0four\u200bfive",
    "#" * 300,
]


def check_spans(text, tokens):
    """Every token is its slice of the text, holds no whitespace, and the tokens are in order without overlap."""
    previous_end = 0
    for token, start, end in tokens:
        assert text[start:end] == token and token
        assert not any(c.isspace() for c in token), token
        assert start >= previous_end
        previous_end = end


# ----------------------------------------------------------------------------------------------------------------
# tokenize

@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tokens_are_slices_of_the_text(text):
    tokens = tokenize(text)
    check_spans(text, tokens)
    if "&" not in text:  # nothing dropped: every character outside the tokens is whitespace
        covered = {i for _, start, end in tokens for i in range(start, end)}
        assert all(c.isspace() for i, c in enumerate(text) if i not in covered)


def test_same_tokens_as_the_library_on_ordinary_tweets():
    tweets = ["RT @JayKenMinaj_: Me outside of where George Zimmerman got shot at. http://t.co/Z3neVBQ7vF",
              "Swan upping: first stop #Windsor :-) I'm sooo happy, aren't you? <3",
              "Obama's speech in Paris (France) -> 'historic' #COP21 #climate",
              "I ❤️ NY 😂😂 🇫🇷 👍🏽 — costs $5.99, 50% off!"]
    library = TweetTokenizer()
    for text in tweets:
        assert [token for token, _, _ in tokenize(text)] == library.tokenize(text)


def test_html_entities_stay_as_written():
    text = "AT&amp;T &lt;3 &#39;hi&#39; &foo; a&nbsp;b &NotEqualTilde;"
    assert tokenize(text) == [("AT", 0, 2), ("&amp;", 2, 7), ("T", 7, 8), ("&lt;3", 9, 14), ("&#39;", 15, 20),
                              ("hi", 20, 22), ("&#39;", 22, 27), ("&", 28, 29), ("foo", 29, 32), (";", 32, 33),
                              ("a", 34, 35), ("b", 41, 42), ("&NotEqualTilde;", 43, 58)]


def test_changes_to_the_library_that_follow_the_training_data():
    def tokens(text):
        return [token for token, _, _ in tokenize(text)]
    assert tokens("Wow!!!!") == ["Wow", "!", "!", "!", "!"]          # the library keeps 3 of the 4
    assert tokens("1922 - 2015 , 617-254-1030") == ["1922", "-", "2015", ",", "617-254-1030"]
    assert tokens("wait . . . what") == ["wait", ".", ".", ".", "what"]
    assert tokens("Trump2016 Indy500 2016Trump") == ["Trump2016", "Indy500", "2016Trump"]
    assert tokens("#NBA @espn_1 http://t.co/x1") == ["#NBA", "@espn_1", "http://t.co/x1"]


def test_emoji_keep_their_offsets():
    text = "😂 at 🇫🇷 x"  # code points: 😂=0, flag = 5..6 (two regional indicators)
    assert tokenize(text) == [("😂", 0, 1), ("at", 2, 4), ("🇫🇷", 5, 7), ("x", 8, 9)]


# ----------------------------------------------------------------------------------------------------------------
# Agreement with tokenised data

def test_tokenizer_agreement_counts_tweets_that_come_back_identical():
    tweets = [data.Tweet("1", ["Me", "at", "Paris", "!"], ["O", "O", "B-LOC", "O"], 1),
              data.Tweet("2", ["&amp", ";"], ["O", "O"], 7),                   # split by the library: & amp ;
              data.Tweet("3", [], [], 10)]
    share, examples = raw_tweets.tokenizer_agreement(tweets)
    assert share == pytest.approx(2 / 3)
    assert examples == [{"img_id": "2", "line": 7, "gold": ["&amp", ";"], "tokenized": ["&", "amp", ";"]}]
    with pytest.raises(ValueError):
        raw_tweets.tokenizer_agreement([])


MEASURED_AGREEMENT = {"train": 0.8800, "dev": 0.8870, "test": 0.8885}  # nltk 3.10.4


def test_agreement_on_twitter2015():
    folder = os.environ.get("TWITTER2015_DIR")
    if not folder:
        pytest.skip("TWITTER2015_DIR is not set (point it at the folder with train/dev/test)")
    for name, measured in MEASURED_AGREEMENT.items():
        tweets, _ = data.read_tweets(os.path.join(folder, name))
        share, _ = raw_tweets.tokenizer_agreement(tweets)
        assert share > measured - 0.02, (name, share)


# ----------------------------------------------------------------------------------------------------------------
# Entities

def test_entities_follow_seqeval_and_point_into_the_text():
    text = "Nous   aimons New  York 🗽 et Zu\u0308rich @UN_News #Obama"
    tokens = tokenize(text)
    assert [t for t, _, _ in tokens] == ["Nous", "aimons", "New", "York", "🗽", "et", "Zu\u0308rich", "@UN_News",
                                         "#Obama"]
    tags = ["I-PER", "O", "B-LOC", "I-LOC", "O", "O", "I-LOC", "I-ORG", "B-PER"]
    assert entities_from_tags(text, tokens, tags) == [
        {"text": "Nous", "type": "PER", "start": 0, "end": 4},            # I- after O starts an entity
        {"text": "New  York", "type": "LOC", "start": 14, "end": 23},     # the spaces between tokens as written
        {"text": "Zu\u0308rich", "type": "LOC", "start": 29, "end": 36},
        {"text": "@UN_News", "type": "ORG", "start": 37, "end": 45},      # I- of another type starts an entity
        {"text": "#Obama", "type": "PER", "start": 46, "end": 52}]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_entity_offsets_hold_for_tricky_text(text):
    tokens = tokenize(text)
    for pattern in (["B-PER", "I-PER"], ["B-LOC"], ["I-ORG", "O"]):     # runs of every length and single tokens
        tags = [pattern[i % len(pattern)] for i in range(len(tokens))]
        entities = entities_from_tags(text, tokens, tags)
        assert len(entities) == {"B-PER": (len(tokens) + 1) // 2, "B-LOC": len(tokens),
                                 "I-ORG": (len(tokens) + 1) // 2}[pattern[0]]
        for entity in entities:
            assert text[entity["start"]:entity["end"]] == entity["text"]


def test_entities_need_one_tag_per_token():
    with pytest.raises(ValueError, match="2 tags for 3 tokens"):
        entities_from_tags("a b c", tokenize("a b c"), ["O", "O"])


# ----------------------------------------------------------------------------------------------------------------
# Output records

def test_output_record_says_which_image_feature_was_used():
    with_image = RawTweet("7", "Messi in Paris", "/img/7.jpg", tokenize("Messi in Paris"), 3)
    out = output_record(with_image, ["B-PER", "O", "B-LOC"], has_image_feature=True)
    assert out == {"id": "7", "text": "Messi in Paris", "image": "/img/7.jpg", "tokens": ["Messi", "in", "Paris"],
                   "spans": [[0, 5], [6, 8], [9, 14]], "tags": ["B-PER", "O", "B-LOC"],
                   "entities": [{"text": "Messi", "type": "PER", "start": 0, "end": 5},
                                {"text": "Paris", "type": "LOC", "start": 9, "end": 14}],
                   "image_feature": "image", "zero_feature_reason": None}
    assert json.loads(json.dumps(out)) == out

    unreadable = output_record(with_image, ["O", "O", "O"], False, image_problem="cannot identify image file")
    assert (unreadable["image_feature"], unreadable["zero_feature_reason"]) == \
        ("zero", "image not usable: cannot identify image file")
    no_image = RawTweet("8", "", None, [], 4)
    assert output_record(no_image, [], False)["zero_feature_reason"] == "no image given"
    assert output_record(no_image, [], False)["entities"] == []


def test_output_record_of_a_text_only_model_says_so():
    for image in (None, "/img/7.jpg"):
        out = output_record(RawTweet("7", "Messi", image, tokenize("Messi"), 1), ["B-PER"], False, text_only=True)
        assert (out["image_feature"], out["zero_feature_reason"]) == ("none", raw_tweets.TEXT_ONLY)
        assert "text-only" in raw_tweets.TEXT_ONLY


def test_output_record_refuses_contradictions():
    record = RawTweet("7", "Messi", None, tokenize("Messi"), 1)
    with pytest.raises(ValueError, match="no image"):
        output_record(record, ["B-PER"], has_image_feature=True)
    with pytest.raises(ValueError, match="image_problem"):
        output_record(RawTweet("7", "Messi", "x.jpg", tokenize("Messi"), 1), ["B-PER"], has_image_feature=False)
    with pytest.raises(ValueError, match="'7': 0 tags for 1 tokens"):
        output_record(record, [], has_image_feature=False)


def test_format_jsonl_writes_one_object_per_line_with_characters_as_they_are():
    outputs = [output_record(raw_tweets.record_from_text(text), ["O"] * len(tokenize(text)), False)
               for text in ("Zürich 😂", "a\u2028b")]
    text = raw_tweets.format_jsonl(outputs)
    assert "Zürich 😂" in text and text.count("\n") == 2
    assert [json.loads(line) for line in text.split("\n")[:2]] == outputs


def test_format_jsonl_escapes_what_readers_take_for_line_breaks():
    """U+0085, U+2028 and U+2029 may stand raw in a JSON string, but str.splitlines (and JavaScript) end a line
    there: escaped, every reader sees one record per line, and the text reads back the same."""
    texts = ["a\u2028b", "c\u2029d", "e\u0085f", "g\x0bh\x0ci\x1cj"]
    outputs = [output_record(raw_tweets.record_from_text(text), ["O"] * len(tokenize(text)), False) for text in texts]
    written = raw_tweets.format_jsonl(outputs)
    assert len(written.splitlines()) == len(texts)
    assert [json.loads(line)["text"] for line in written.splitlines()] == texts
    assert "\\u2028" in written and "\u2028" not in written


# ----------------------------------------------------------------------------------------------------------------
# Reading JSONL

def write_lines(path, lines, encoding="utf-8"):
    path.write_bytes("\n".join(lines).encode(encoding) if isinstance(lines[0], str) else b"\n".join(lines))
    return str(path)


def test_read_jsonl_reads_records_and_resolves_images_against_the_file(tmp_path):
    folder = tmp_path / "tweets"
    folder.mkdir()
    path = write_lines(folder / "in.jsonl", [
        '\ufeff{"id": "a1", "text": "Messi in Paris", "image": "img/a1.jpg"}',   # byte-order mark on line 1
        '',
        '{"text": "", "image": null, "lang": "en"}',                            # empty text, extra key ignored
        '{"id": 1234567890123456789, "text": "I ❤️ NY\u2028ok", "image": "/abs/x.png"}\r'])
    records, errors = read_jsonl(path)
    assert errors == []
    assert [(r.id, r.text, r.image, r.line) for r in records] == [
        ("a1", "Messi in Paris", os.path.join(str(folder), "img", "a1.jpg"), 1),
        ("3", "", None, 3),
        ("1234567890123456789", "I ❤️ NY\u2028ok", "/abs/x.png", 4)]
    assert records[0].tokens == [("Messi", 0, 5), ("in", 6, 8), ("Paris", 9, 14)]
    assert records[1].tokens == []

    tweets = raw_tweets.to_tweets(records)
    assert [(t.img_id, t.tokens, t.tags, t.line) for t in tweets] == [
        ("a1", ["Messi", "in", "Paris"], ["O", "O", "O"], 1), ("3", [], [], 3),
        ("1234567890123456789", ["I", "❤", "\ufe0f", "NY", "ok"], ["O"] * 5, 4)]


def test_read_jsonl_reports_every_bad_line_and_keeps_the_rest(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [
        b'{"id": "x", "text": "good one"}',
        b'{"text": "missing brace"',
        b'["a list"]',
        b'{"id": "y"}',
        b'{"text": 42}',
        b'{"text": "t", "image": 5}',
        b'{"text": "t", "image": ""}',
        b'{"text": "t", "id": 1.5}',
        b'{"text": "t", "id": true}',
        b'{"text": "dup", "id": "x"}',
        b'{"text": "t", "id": "12"}',
        b'{"text": "\xff latin-1"}',
        b'{"text": "no id: line 13 is its id"}',
        b'{"text": null}'])
    records, errors = read_jsonl(path)
    assert [(r.id, r.line) for r in records] == [("x", 1), ("12", 11), ("13", 13)]
    expected = [(2, "not valid JSON"), (3, "a JSON array, not an object"), (4, "has no `text`"),
                (5, "`text` that is number"), (6, "`image` must be"), (7, "`image` must be"), (8, "`id` must be"),
                (9, "`id` must be"), (10, "id 'x' is already used by line 1"), (12, "not UTF-8"),
                (14, "has a `text` that is null")]
    assert len(errors) == len(expected)
    for message, (line, words) in zip(errors, expected):
        assert message.startswith(f"{path}:{line}: ") and words in message, message
    assert errors[1] == (f"{path}:3: a JSON array, not an object. Each line must be one JSON object such as "
                         '{"id": "1", "text": "Messi in Paris", "image": "photo.jpg"}.')


def test_read_jsonl_reports_lines_that_cannot_be_read_or_written(tmp_path):
    """A lone surrogate (which no output can hold), nesting deeper than the parser's recursion, a 5,000-digit id
    (more digits than Python converts): each is one bad line; the others are read."""
    path = write_lines(tmp_path / "odd.jsonl", [
        '{"text": "first"}',
        '{"text": "half a pair \\ud800 here"}',
        '{"id": "\\udc00x", "text": "t"}',
        '{"text": "t", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"id": ' + "7" * 5_000 + ', "text": "t"}',
        '{"text": "a pair \\ud83d\\ude00 is fine"}'])
    records, errors = read_jsonl(path)
    assert [(r.line, r.text) for r in records] == [(1, "first"), (6, "a pair 😀 is fine")]
    assert errors == [
        f"{path}:2: `text` holds a lone surrogate, \\ud800 at character 12: half of a UTF-16 pair escaped without "
        f"its other half, which is no character and cannot be written out. Escape the whole pair, or write the "
        f"character itself.",
        f"{path}:3: `id` holds a lone surrogate, \\udc00 at character 0: half of a UTF-16 pair escaped without its "
        f"other half, which is no character and cannot be written out. Escape the whole pair, or write the "
        f"character itself.",
        f"{path}:4: arrays or objects nested too deeply to read. Each line must be one JSON object such as "
        f"{raw_tweets.EXAMPLE_LINE}.",
        f"{path}:5: a number of more than 4,300 digits, more than Python reads. Write it as a string (an `id` in "
        f"quotes)."]


@pytest.mark.parametrize("text, image, message", [
    ("Messi \udcff Paris", None, "--text: byte 0xff at character 6 is not UTF-8"),
    ("Messi", "caf\udce9.jpg", "--image: byte 0xe9 at character 3 is not UTF-8"),
    ("Messi \ud800", None, "--text: the lone surrogate U+D800 at character 6 is not UTF-8")])
def test_command_line_text_that_is_not_utf8_is_refused(text, image, message):
    """Python keeps a command-line byte that is not UTF-8 as a lone surrogate (U+DC80..U+DCFF); no output holds it."""
    with pytest.raises(data.DataError, match=re.escape(message)):
        raw_tweets.record_from_text(text, image)


def test_read_jsonl_duplicate_of_a_default_id_says_why(tmp_path):
    path = write_lines(tmp_path / "ids.jsonl", ['{"text": "a", "id": "2"}', '{"text": "b"}'])
    records, errors = read_jsonl(path)
    assert [r.id for r in records] == ["2"]
    assert errors == [f"{path}:2: id '2' is already used by line 1 (a line without `id` gets its line number as id). "
                      f"Give every tweet its own id."]


def test_read_jsonl_refuses_a_missing_or_empty_file(tmp_path):
    with pytest.raises(data.DataError, match="no such file"):
        read_jsonl(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(data.DataError, match="no tweets"):
        read_jsonl(str(tmp_path / "empty.jsonl"))


def test_record_from_text_keeps_the_image_path_as_given():
    record = raw_tweets.record_from_text("Obama in Kenya", image="photo.jpg")
    assert (record.id, record.image, record.line) == ("1", "photo.jpg", 0)
    assert [t for t, _, _ in record.tokens] == ["Obama", "in", "Kenya"]


def test_read_jsonl_reports_text_the_tokenizer_gives_up_on(tmp_path, monkeypatch):
    def give_up(text):  # what NLTK's regex guard raises after 5 s on e.g. 40,000 `#`
        if text.startswith("#"):
            raise TimeoutError("regular-expression match exceeded its 5.0s time limit")
        return tokenize(text)
    monkeypatch.setattr(raw_tweets, "tokenize", give_up)
    path = write_lines(tmp_path / "long.jsonl", ['{"text": "####"}', '{"text": "fine"}'])
    records, errors = read_jsonl(path)
    assert [r.text for r in records] == ["fine"]
    assert errors == [f"{path}:1: the tokenizer gave up on this text (4 characters); it is likely a very long run "
                      f"of one punctuation mark. Shorten it."]
