"""The reader, normalisation, vocabularies, word vectors, image features and batches."""
import logging
import re
import time

import pytest
import torch

import data_loader as data
import image_features
import word_vectors
from conftest import write_features


def write(tmp_path, text, name="f", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Reading IMGID-CoNLL

def test_reads_tweets_with_string_ids_and_derived_tags(tmp_path):
    path = write(tmp_path, "IMGID:17_06_12483\nJohn\tB-PER\nSmith\tI-PER\nhi\tO\n\nIMGID:2\nNYC\tB-GPE\n")
    tweets, stats = data.read_tweets(path)
    assert [t.img_id for t in tweets] == ["17_06_12483", "2"]
    assert tweets[0].tokens == ["John", "Smith", "hi"] and tweets[0].tags == ["B-PER", "I-PER", "O"]
    assert tweets[1].tags == ["B-GPE"]
    assert (stats.tweets, stats.tokens) == (2, 4)


def test_crlf_bom_and_no_final_newline(tmp_path):
    path = write(tmp_path, "\ufeffIMGID:1\r\nA\tB-LOC\r\nb\tO\r\n\r\nIMGID:2\r\nc\tO")
    tweets, _ = data.read_tweets(path)
    assert [t.img_id for t in tweets] == ["1", "2"]
    assert tweets[0].tokens == ["A", "b"] and tweets[0].tags == ["B-LOC", "O"]
    assert tweets[1].tokens == ["c"]


def test_missing_tag_reads_as_o_and_is_counted(tmp_path):
    path = write(tmp_path, "IMGID:1\nA\tB-LOC\nlonely\nx\t\n")
    tweets, stats = data.read_tweets(path)
    assert tweets[0].tags == ["B-LOC", "O", "O"]
    assert stats.missing_tags == 2


def test_inside_after_outside_is_counted_and_kept(tmp_path):
    path = write(tmp_path, "IMGID:1\na\tO\nb\tI-PER\nc\tB-LOC\nd\tI-PER\n")
    tweets, stats = data.read_tweets(path)
    assert stats.dangling_inside == 2
    assert tweets[0].tags == ["O", "I-PER", "B-LOC", "I-PER"]


def test_duplicate_ids_and_empty_tweets_are_kept(tmp_path):
    path = write(tmp_path, "IMGID:1\na\tO\n\nIMGID:1\nb\tO\n\nIMGID:3\n\nIMGID:4\nc\tO\n")
    tweets, stats = data.read_tweets(path)
    assert [t.img_id for t in tweets] == ["1", "1", "3", "4"]
    assert stats.duplicate_ids == 1 and stats.empty_tweets == 1 and tweets[2].tokens == []


def test_tokens_with_spaces_and_emoji(tmp_path):
    path = write(tmp_path, "IMGID:1\nNew York\tB-LOC\n\U0001F600\tO\n\u2028x\tO\n")
    tweets, _ = data.read_tweets(path)
    assert tweets[0].tokens == ["New York", "\U0001F600", "\u2028x"]


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("   \n\n", "the file is empty"),
    ("a\tO\nIMGID:1\n", "f:1: token line 'a\\tO' comes before the first `IMGID:<id>`"),
    ("IMGID:1\na\tO\n\nb\tO\n", "f:4: token line 'b\\tO' comes after a blank line"),
    ("IMGID:1\na\tO\textra\n", "f:2: 3 tab-separated fields"),
    ("IMGID:1\na\tX-PER\n", "f:2: tag 'X-PER' is not a BIO tag"),
    ("IMGID:1\na\tI-\n", "f:2: tag 'I-' is not a BIO tag"),
    ("IMGID:\na\tO\n", "f:1: `IMGID:` has no id"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(data.DataError) as err:
        data.read_tweets(path)
    assert message in str(err.value)


def test_non_utf8_names_line_and_byte_offset(tmp_path):
    path = write(tmp_path, b"IMGID:1\nab\tO\ncaf\xe9\tO\n", mode="wb")
    with pytest.raises(data.DataError) as err:
        data.read_tweets(path)
    assert "f:3: byte 0xe9 at byte offset 16 (byte 3 of the line) is not UTF-8" in str(err.value)


def test_old_mac_cr_line_ends(tmp_path):
    path = write(tmp_path, "IMGID:1\rA\tB-LOC\rb\tO\r\rIMGID:2\rc\tO\r")
    tweets, stats = data.read_tweets(path)
    assert [t.tokens for t in tweets] == [["A", "b"], ["c"]] and stats.tokens == 3


def test_line_of_invisible_characters_is_named(tmp_path):
    path = write(tmp_path, "IMGID:1\na\tO\n\u00a0\nb\tO\n")
    with pytest.raises(data.DataError, match=r":3: the line holds only invisible characters \(U\+00A0\)"):
        data.read_tweets(path)


def test_tag_column_on_the_id_line_is_not_part_of_the_id(tmp_path, caplog):
    path = write(tmp_path, "IMGID:1\tO\na\tO\n\nIMGID:2\nb\tO\n")
    tweets, stats = data.read_tweets(path)
    assert [t.img_id for t in tweets] == ["1", "2"] and stats.tagged_id_lines == 1
    with pytest.raises(data.DataError, match=r":1: 'IMGID:1\\tx y' is not `IMGID:<id>`"):
        data.read_tweets(write(tmp_path, "IMGID:1\tx y\na\tO\n", name="g"))


@pytest.mark.parametrize("token", ["1" * 5000 + "x", "." * 5000 + "x", "www." + "a." * 3000 + " ",
                                   "http://" + "a" * 5000 + " x", ":" + ")" * 5000 + "x", "@" + "a" * 5000 + "!",
                                   "a" * 5000 + "!", "#" + "ab" * 3000])
def test_normalisation_is_linear_on_adversarial_tokens(token):
    start = time.perf_counter()
    data.normalize_token(token)
    data.normalize_token(token * 2)
    assert time.perf_counter() - start < 0.2  # the old number pattern took minutes on the first of these


def test_a_folder_or_an_unreadable_file_as_data(tmp_path, monkeypatch):
    (tmp_path / "train").mkdir()
    with pytest.raises(data.DataError, match="train: is a directory, not a data file"):
        data.read_tweets(str(tmp_path / "train"))
    path = write(tmp_path, "IMGID:1\na\tO\n")
    real_open = open

    def denied(file, *args, **kwargs):
        if str(file) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)  # as for a non-root user without read permission
    with pytest.raises(data.DataError, match=r"f: cannot be read \(Permission denied\). Check its permissions"):
        data.read_tweets(path)


def test_missing_file_names_path_and_flag(tmp_path):
    with pytest.raises(data.DataError, match="no such file.*--data_dir"):
        data.read_tweets(str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and vocabularies

@pytest.mark.parametrize("token, normal", [
    ("Hello", "hello"), ("http://t.co/Z3neVBQ7vF", "<url>"), ("www.bbc.co.uk", "<url>"), ("@JayKenMinaj", "<user>"),
    ("#NBA", "nba"), ("#", "#"), ("1,000", "<number>"), ("-3.5", "<number>"), ("12:30", "<number>"), (":)", "<smile>"),
    (":-(", "<sadface>"), (":P", "<lolface>"), ("<3", "<heart>"), ("sooooo", "so"), ("!!!", "!"), ("A1", "a1"),
])
def test_normalize_token_follows_glove_twitter(token, normal):
    assert data.normalize_token(token) == normal


def test_vocab_from_all_splits_frequency_order_and_caps():
    tweets = lambda *toks: [data.Tweet("1", list(toks), ["O"] * len(toks), 1)]  # noqa: E731
    train, dev = tweets("a", "b", "b", "@x"), tweets("c", "c", "c", "Ab")
    vocab = data.build_vocab([train, dev], train, max_words=5, max_chars=4, built_from=["train", "dev"])
    assert vocab.words == [data.PAD, data.UNK, "c", "b", "a"]  # capped at 5; dev words counted
    assert vocab.chars == [data.PAD, data.UNK, "b", "c"]  # 3 each: first seen first
    assert vocab.tags == ["O"]
    only_train = data.build_vocab([train], train, 100, 100, ["train"])
    assert "c" not in only_train.word_index and "<user>" in only_train.word_index


def test_tags_come_from_training_data_in_stable_order():
    train = [data.Tweet("1", ["a", "b", "c"], ["B-ORG", "I-ORG", "B-GPE"], 1)]
    vocab = data.build_vocab([train], train, 10, 10, ["train"])
    assert vocab.tags == ["O", "B-GPE", "B-ORG", "I-ORG"]


def test_vocab_round_trip_through_a_checkpoint(tmp_path):
    train = [data.Tweet("1", ["x\u2028y", "Paris"], ["B-PER", "O"], 1)]
    vocab = data.build_vocab([train], train, 10, 10, ["train"], word_form="raw")
    torch.save({"vocab": vocab.to_dict()}, tmp_path / "v.pt")
    loaded = data.Vocab.from_dict(torch.load(tmp_path / "v.pt", weights_only=True)["vocab"])
    assert (loaded.words, loaded.chars, loaded.tags) == (vocab.words, vocab.chars, vocab.tags)
    assert loaded.word_of("Paris") == "Paris" and loaded.vector_key("Paris") == "paris"  # the authors' raw form
    assert data.build_vocab([train], train, 10, 10, ["train"]).word_of("Paris") == "paris"  # GloVe form


def test_unseen_dev_tag_is_reported(caplog):
    train = [data.Tweet("1", ["a"], ["B-PER"], 1)]
    vocab = data.build_vocab([train], train, 10, 10, ["train"])
    with caplog.at_level(logging.WARNING):
        unseen = data.check_tags_known("dev", [data.Tweet("2", ["b", "c"], ["B-MISC", "I-MISC"], 1)], vocab)
    assert unseen == {"B-MISC": 1, "I-MISC": 1}
    assert "never seen in training" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# Word vectors

def small_vocab(*words):
    return data.Vocab([data.PAD, data.UNK, *words], [data.PAD, data.UNK], ["O"])


def test_word_vectors_glove_and_word2vec_formats(tmp_path):
    vocab = small_vocab("cat", "dog", "emu")
    glove = write(tmp_path, "cat 1 2 3\nzebra 0 0 0\ndog 4 5 6\n", "glove.txt")
    w2v = write(tmp_path, "3 3\ncat 1 2 3\nzebra 0 0 0\ndog 4 5 6\n", "w2v.txt")
    for path in (glove, w2v):
        matrix = word_vectors.load_word_vectors(path, vocab, 3)
        assert matrix[2].tolist() == [1, 2, 3] and matrix[3].tolist() == [4, 5, 6]
        assert matrix[0].tolist() == [0, 0, 0]
        assert matrix[4].abs().max() <= 0.25 and matrix[4].abs().sum() > 0  # emu: random init


def test_word_vectors_tab_separated_and_raw_vocab_lookup(tmp_path):
    path = write(tmp_path, "cat\t1\t2\t3\nparis\t4\t5\t6\n", "tabs.txt")
    vocab = data.Vocab([data.PAD, data.UNK, "cat", "Paris", "paris"], [data.PAD, data.UNK], ["O"], word_form="raw")
    matrix = word_vectors.load_word_vectors(path, vocab, 3)
    assert matrix[2].tolist() == [1, 2, 3]
    assert matrix[3].tolist() == matrix[4].tolist() == [4, 5, 6]  # both casings take the lower-cased vector


def test_word_vectors_bad_byte_and_invisible_line_name_their_line(tmp_path):
    path = write(tmp_path, b"cat 1 2 3\ndog 4 5 6\nca\xfe 7 8 9\n", "bad.txt", mode="wb")
    with pytest.raises(data.DataError, match=r"bad.txt:3: byte 0xfe \(byte 2 of the line\) is not UTF-8"):
        word_vectors.load_word_vectors(path, small_vocab("cat"), 3)
    path = write(tmp_path, "cat 1 2 3\n\u00a0\ndog 4 5 6\n", "nbsp.txt")
    with pytest.raises(data.DataError, match=r"nbsp.txt:2: the line holds only invisible characters"):
        word_vectors.load_word_vectors(path, small_vocab("cat"), 3)


def test_word_vectors_wrong_dimension(tmp_path):
    path = write(tmp_path, "cat 1 2 3 4\n", "v.txt")
    with pytest.raises(data.DataError, match=r"v.txt:1: 4 numbers after the word, but --word_emb_dim is 3"):
        word_vectors.load_word_vectors(path, small_vocab("cat"), 3)
    header = write(tmp_path, "10 4\ncat 1 2 3 4\n", "h.txt")
    with pytest.raises(data.DataError, match=r"h.txt:1: the header says 4-d vectors"):
        word_vectors.load_word_vectors(header, small_vocab("cat"), 3)


def test_word_vectors_malformed_lines_skipped_counted_or_fatal(tmp_path, caplog):
    good = "".join(f"w{i} 1 2 3\n" for i in range(300))
    path = write(tmp_path, "cat 1 2 3\n" + good + "dog 1 x 3\nemu 1 2\n", "v.txt")
    with caplog.at_level(logging.WARNING):
        matrix = word_vectors.load_word_vectors(path, small_vocab("cat", "dog", "emu"), 3)
    assert "skipped 2 malformed lines (first at line 302)" in caplog.text
    assert matrix[2].tolist() == [1, 2, 3]
    bad = write(tmp_path, "cat 1 2 3\ndog 1 x 3\nemu 1 2\n", "bad.txt")
    with pytest.raises(data.DataError, match="2 of 3 lines are malformed"):
        word_vectors.load_word_vectors(bad, small_vocab("cat", "dog", "emu"), 3)


def test_word_vectors_duplicates_keep_first(tmp_path, caplog):
    path = write(tmp_path, "cat 1 2 3\ncat 7 7 7\n", "v.txt")
    with caplog.at_level(logging.WARNING):
        matrix = word_vectors.load_word_vectors(path, small_vocab("cat"), 3)
    assert matrix[2].tolist() == [1, 2, 3] and "1 words appear more than once" in caplog.text


def test_word_vectors_missing_file_points_to_no_w2v(tmp_path):
    with pytest.raises(data.DataError, match="--no_w2v"):
        word_vectors.load_word_vectors(str(tmp_path / "none.vec"), small_vocab("cat"), 3)


# ---------------------------------------------------------------------------------------------------------------
# Image features

def test_features_int_keys_both_layouts_both_dtypes(tmp_path):
    grid = torch.arange(512 * 49, dtype=torch.float32).reshape(512, 7, 7)
    torch.save({1: torch.ones(49, 512, dtype=torch.float16), 2: grid}, tmp_path / "f.pt")
    table = image_features.load_image_features(str(tmp_path / "f.pt"), ["1", "2", "3", "1"])
    assert table.row_of == {"1": 1, "2": 2} and table.missing_ids == ["3"]
    feats = table.gather(table.rows(["1", "2", "3"]))
    assert feats.shape == (3, 49, 512) and feats.dtype == torch.float32
    assert feats[0].eq(1).all() and feats[2].eq(0).all()
    assert feats[1, 8, 5].item() == grid[5, 1, 1].item()  # region 8 = row 1, column 1 of the 7 x 7 grid


def test_stacked_layout_reads_as_the_per_image_one(tmp_path):
    grid = torch.arange(512 * 49, dtype=torch.float16).reshape(512, 7, 7)
    features = {"a": torch.rand(49, 512).half(), 17: grid.reshape(512, 49).t()}  # an int id is stored as '17'
    record = {"mode": "seed", "dtype": "float16"}
    image_features.save_features(features, tmp_path / "stacked.pt", record)
    torch.save({**features, image_features.PROVENANCE_KEY: record}, tmp_path / "per_image.pt")
    ids = ["17", "x", "a"]
    stacked, per_image = (image_features.load_image_features(str(tmp_path / name), ids)
                          for name in ("stacked.pt", "per_image.pt"))
    assert stacked.row_of == per_image.row_of == {"17": 1, "a": 2} and stacked.missing_ids == ["x"]
    assert stacked.provenance == per_image.provenance == record
    rows = stacked.rows(ids)
    assert torch.equal(stacked.gather(rows), per_image.gather(rows))
    assert torch.equal(stacked.gather(rows)[2], features["a"].float())
    stored = torch.load(tmp_path / "stacked.pt", weights_only=True)
    assert stored[image_features.IMAGE_IDS_KEY] == ["a", "17"] and stored[image_features.REGIONS_KEY].shape == (2, 49, 512)
    image_features.save_features({}, tmp_path / "none.pt", None)
    assert image_features.read_features(tmp_path / "none.pt") == ({}, None)


@pytest.mark.parametrize("stored, message", [
    ({image_features.REGIONS_KEY: torch.zeros(2, 49, 512)}, "its '__image_ids__' is not a list of image ids"),
    ({image_features.IMAGE_IDS_KEY: ["a", 7], image_features.REGIONS_KEY: torch.zeros(2, 49, 512)},
     "its '__image_ids__' is not a list of image ids"),
    ({image_features.IMAGE_IDS_KEY: ["a", "b"], image_features.REGIONS_KEY: torch.zeros(3, 49, 512)},
     r"'__regions__' is \(3, 49, 512\); expected one \(49, 512\) feature per image id, \(2, 49, 512\)"),
    ({image_features.IMAGE_IDS_KEY: ["a", "b"], image_features.REGIONS_KEY: [1, 2]}, "'__regions__' is list"),
    ({image_features.IMAGE_IDS_KEY: ["a", "b", "a"], image_features.REGIONS_KEY: torch.zeros(3, 49, 512)},
     "image id 'a' is in the file twice"),
    ({image_features.IMAGE_IDS_KEY: ["a", "b"], image_features.REGIONS_KEY: torch.zeros(2, 49, 500)},
     r"image id 'a' has shape \(49, 500\)"),
])
def test_a_broken_stacked_file_says_what_is_wrong(tmp_path, stored, message):
    torch.save(stored, tmp_path / "f.pt")
    with pytest.raises(data.DataError, match=f"{tmp_path / 'f.pt'}: .*{message}.*save_vgg_feature.py"):
        image_features.load_image_features(str(tmp_path / "f.pt"), ["a", "b"])


def test_a_non_finite_row_of_a_stacked_file_is_named_by_its_id(tmp_path):
    regions = torch.zeros(3, 49, 512, dtype=torch.float16)
    regions[1, 48, 511] = float("inf")
    image_features.save_features(dict(zip(["a", "b", "c"], regions)), tmp_path / "f.pt", None)
    assert image_features.load_image_features(str(tmp_path / "f.pt"), ["a", "c"]).row_of == {"a": 1, "c": 2}
    with pytest.raises(data.DataError, match="image id 'b' contains NaN or inf"):
        image_features.load_image_features(str(tmp_path / "f.pt"), ["a", "b"])


def test_features_handed_out_are_copies(tmp_path):
    stored = write_features(tmp_path / "f.pt", [str(i) for i in range(20)], dtype=torch.float16)
    table = image_features.load_image_features(str(tmp_path / "f.pt"), [str(i) for i in range(20)])
    rows = table.rows([str(i) for i in range(20)])
    first = table.gather(rows)
    assert torch.equal(first, torch.stack([stored[str(i)] for i in range(20)]).float())
    first *= 5  # a caller writing into its batch
    assert torch.equal(table.gather(rows), torch.stack([stored[str(i)] for i in range(20)]).float())


def test_feature_file_with_none_of_the_ids_is_an_error(tmp_path):
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(data.DataError, match="none of the 2 image ids of the data has a feature"):
        image_features.load_image_features(str(tmp_path / "empty.pt"), ["1", "2"])
    torch.save({"features": {"1": torch.zeros(49, 512)}}, tmp_path / "nested.pt")  # one level too deep
    with pytest.raises(data.DataError, match="keys begin 'features'"):
        image_features.load_image_features(str(tmp_path / "nested.pt"), ["1", "2"])


def test_a_large_share_of_missing_features_is_a_loud_warning(tmp_path, caplog):
    torch.save({"1": torch.zeros(49, 512)}, tmp_path / "f.pt")
    image_features.load_image_features(str(tmp_path / "f.pt"), ["1", "2", "3", "4"])
    assert "3 of 4 image ids (75.0%) have no feature" in caplog.text and "THAT IS 75.0% OF THE IMAGES" in caplog.text
    caplog.clear()
    torch.save({str(i): torch.zeros(49, 512) for i in range(19)}, tmp_path / "most.pt")
    image_features.load_image_features(str(tmp_path / "most.pt"), [str(i) for i in range(20)])
    assert "1 of 20 image ids (5.0%) have no feature" in caplog.text and "THAT IS" not in caplog.text


@pytest.mark.parametrize("present, total, shown", [(3, 2003, "99.9%"),    # 99.85%: once 99.9, once 100
                                                   (3, 8257, "99.9%"),    # 99.96%: not 100.0 while 3 have one
                                                   (1, 4001, "99.9%")])
def test_the_share_of_missing_features_is_one_number(tmp_path, caplog, present, total, shown):
    torch.save({str(i): torch.zeros(49, 512) for i in range(present)}, tmp_path / "f.pt")
    image_features.load_image_features(str(tmp_path / "f.pt"), [str(i) for i in range(total)])
    assert re.findall(r"[0-9.]+%", caplog.text) == [shown, shown], caplog.text


def test_feature_id_as_int_and_as_string_is_an_error(tmp_path):
    torch.save({1: torch.zeros(49, 512), "1": torch.ones(49, 512)}, tmp_path / "f.pt")
    with pytest.raises(data.DataError, match="image id '1' is in the file twice, as 1 and as '1'"):
        image_features.load_image_features(str(tmp_path / "f.pt"), ["1"])


def test_provenance_record_is_read_and_not_an_image(tmp_path):
    record = {"mode": "torchvision", "weights_sha256": "397923af"}
    torch.save({"1": torch.zeros(49, 512), image_features.PROVENANCE_KEY: record}, tmp_path / "f.pt")
    table = image_features.load_image_features(str(tmp_path / "f.pt"), ["1"])
    assert table.provenance == record and table.row_of == {"1": 1}
    torch.save({"1": torch.zeros(49, 512)}, tmp_path / "plain.pt")
    assert image_features.load_image_features(str(tmp_path / "plain.pt"), ["1"]).provenance is None


@pytest.mark.parametrize("value, message", [
    (torch.zeros(49, 500), "image id '7' has shape (49, 500)"),
    (torch.zeros(49, 512, dtype=torch.int64), "image id '7' has dtype torch.int64"),
    (torch.full((49, 512), float("nan")), "image id '7' contains NaN or inf"),
    (torch.full((49, 512), float("inf")), "image id '7' contains NaN or inf"),
])
def test_bad_feature_names_the_id(tmp_path, value, message):
    torch.save({"7": value}, tmp_path / "f.pt")
    with pytest.raises(data.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        image_features.load_image_features(str(tmp_path / "f.pt"), ["7"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_feature_check_finds_one_non_finite_value_and_passes_the_largest_finite_ones(dtype):
    """all_finite checks a feature through its sum in a wider type: the largest finite values do not overflow it,
    and one NaN or infinity, or two infinities of opposite signs, show."""
    largest = torch.full((49, 512), torch.finfo(dtype).max, dtype=dtype)
    assert image_features.all_finite(largest) and image_features.all_finite(-largest)
    for bad in (float("nan"), float("inf"), -float("inf")):
        value = torch.rand(49, 512).to(dtype)
        value[48, 511] = bad
        assert not image_features.all_finite(value)
    value = largest.clone()
    value[0, :2] = torch.tensor([float("inf"), -float("inf")])
    assert not image_features.all_finite(value)


def test_feature_file_not_torch_or_not_a_mapping(tmp_path):
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(data.DataError, match="not a readable torch file"):
        image_features.load_image_features(str(tmp_path / "junk.pt"), ["1"])
    torch.save([torch.zeros(49, 512)], tmp_path / "list.pt")
    with pytest.raises(data.DataError, match="holds a list; expected a dict"):
        image_features.load_image_features(str(tmp_path / "list.pt"), ["1"])
    with pytest.raises(data.DataError, match="not found.*--no_img"):
        image_features.load_image_features(str(tmp_path / "none.pt"), ["1"])


def test_missing_ids_listed_with_verbose(tmp_path, caplog):
    torch.save({"1": torch.zeros(49, 512)}, tmp_path / "f.pt")
    with caplog.at_level(logging.DEBUG, logger="image_features"):
        image_features.load_image_features(str(tmp_path / "f.pt"), ["1", "x9", "y8"])
    assert "2 of 3 image ids (66.7%) have no feature" in caplog.text and "x9 y8" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# Encoding and batches

def test_encode_truncates_only_when_asked_and_skips_empty_tweets():
    tweets = [data.Tweet("1", ["a", "b", "c"], ["O", "B-PER", "O"], 1), data.Tweet("2", [], [], 3),
              data.Tweet("3", ["Abcdefgh"], ["O"], 4)]
    vocab = data.build_vocab([tweets], tweets, 50, 50, ["train"])
    full = data.encode_tweets(tweets, vocab, max_word_len=4)
    assert [ex.index for ex in full] == [0, 2] and len(full[0].word_ids) == 3
    assert full[1].char_ids.shape == (1, 4)  # characters cut at max_word_len, the token kept
    short = data.encode_tweets(tweets, vocab, max_word_len=4, max_seq_len=2)
    assert len(short[0].word_ids) == 2


def test_collate_pads_to_batch_and_masks():
    tweets = [data.Tweet("1", ["a", "bb"], ["O", "O"], 1), data.Tweet("2", ["ccc", "d", "e", "f"], ["O"] * 4, 3)]
    vocab = data.build_vocab([tweets], tweets, 50, 50, ["train"])
    batch = data.collate(data.encode_tweets(tweets, vocab, 30))
    assert batch.word_ids.shape == (2, 4) and batch.char_ids.shape == (2, 4, 3)
    assert batch.word_mask.tolist() == [[True, True, False, False], [True] * 4]
    assert batch.region_feats is None and batch.indices == [0, 1]
