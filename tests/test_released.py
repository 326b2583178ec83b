"""The released pipeline (released.py): the authors' reader, pairing, scorer, byte characters and PAD row.

Small IMGID-CoNLL files written here, without a blank line after the last tweet (as the public files), test each
rule; every expected number is worked out by hand in a comment. The real Twitter-2015 files (TWITTER2015_DIR) are
read at the end; unset: skipped with that reason."""
import pathlib

import numpy as np
import pytest

import released
from conftest import real_data_folder, write_conll, write_public_style


def tweets_of(split, count):
    """`count` tweets of one split; tweet k has image id '<split>-img<k>' and tokens '<split><k>a', '<split><k>b'."""
    return [(f"{split}-img{k}", [(f"{split}{k}a", "B-PER"), (f"{split}{k}b", "O")]) for k in range(count)]


@pytest.fixture
def three_files(tmp_path):
    """train 3 tweets, dev 4, test 5: 12 images, no trailing blank lines."""
    counts = {"train": 3, "dev": 4, "test": 5}
    paths = [write_public_style(tmp_path / split, tweets_of(split, counts[split])) for split in released.SPLITS]
    return paths


def test_file_ends_merge_tweets_and_datasplit_counts_images(three_files):
    read = released.released_sentences(three_files)
    # Blank lines close tweets; the last tweet of train and of dev is still open when its file ends, and the one
    # final append runs after test. Sentences: t0, t1, t2+d0, d1, d2, d3+e0, e1, e2, e3, e4 -> 10 (12 tweets - 2).
    assert len(read.sentences) == 10 and len(read.img_ids) == 12
    assert [token for token, _ in read.sentences[2]] == ["train2a", "train2b", "dev0a", "dev0b"]
    assert [token for token, _ in read.sentences[5]] == ["dev3a", "dev3b", "test0a", "test0b"]
    assert read.origins[2] == (("train", 2), ("dev", 0)) and read.origins[5] == (("dev", 3), ("test", 0))
    assert read.origins[6] == (("test", 1),)
    # IMGID lines never become tokens: every sentence holds 2 tokens per tweet it is made of (2*12 = 24 in all).
    assert sum(len(s) for s in read.sentences) == 24
    assert not any(token.startswith("IMGID") for s in read.sentences for token, _ in s)
    # Image ids in file order; datasplit = images before train, dev, test, and all: [0, 3, 3+4, 3+4+5].
    assert read.img_ids[:4] == ["train-img0", "train-img1", "train-img2", "dev-img0"]
    assert read.datasplit == [0, 3, 7, 12]


def test_pairing_is_one_off_on_dev_and_two_off_on_test(three_files):
    pairing = released.released_pairing(released.released_sentences(three_files))
    # train = sentences[0:3] = t0, t1, t2+d0 with train images 0-2: right images, one dev tweet trained on.
    assert [slot.img_id for slot in pairing["train"]] == ["train-img0", "train-img1", "train-img2"]
    assert pairing["train"][2].origins == (("train", 2), ("dev", 0))
    # dev = sentences[3:7] = d1, d2, d3+e0, e1 with dev images 0-3: slot i holds dev tweet i+1 (one off).
    dev = pairing["dev"]
    assert [slot.img_id for slot in dev] == ["dev-img0", "dev-img1", "dev-img2", "dev-img3"]
    assert [slot.origins for slot in dev] == [(("dev", 1),), (("dev", 2),), (("dev", 3), ("test", 0)),
                                              (("test", 1),)]
    assert dev[0].tokens == ["dev1a", "dev1b"] and dev[0].tags == ["B-PER", "O"]
    # test = sentences[7:] = e2, e3, e4 (3 = 5 - 2 tweets) with test images 0-2: slot i holds test tweet i+2
    # (two off); test images 3 and 4 are never used.
    test = pairing["test"]
    assert len(test) == 3
    assert [(slot.origins, slot.img_id) for slot in test] == [((("test", i + 2),), f"test-img{i}") for i in range(3)]


def test_trailing_blank_lines_give_an_empty_last_sentence_that_the_released_script_could_not_pair(tmp_path):
    # With a blank line after every tweet (write_conll as it is), nothing merges: 2 + 1 + 2 = 5 tweets closed,
    # plus the final append of the empty open sentence -> 6 sentences; datasplit [0, 2, 3, 5].
    paths = [write_conll(tmp_path / split, tweets_of(split, n)) for split, n in zip(released.SPLITS, (2, 1, 2))]
    read = released.released_sentences(paths)
    assert len(read.sentences) == 6 and read.sentences[-1] == [] and read.datasplit == [0, 2, 3, 5]
    # test = sentences[3:] = 3 sentences for 2 images: Keras would index a third image that does not exist.
    with pytest.raises(ValueError, match="test has 3 sentences for 2 images"):
        released.released_pairing(read)


def test_reader_line_rules(tmp_path):
    # Line by line as Python 2 saw it: "IMGID" anywhere makes the line an image id (line[6:]); a line of spaces
    # and tabs is blank; two blank lines give an empty sentence; a line without a tab keeps tag None.
    (tmp_path / "train").write_bytes(b"IMGID:1\nA\tB-PER\n\n \t\nIMGID:2\nan IMGID x\tO\nb\n")
    (tmp_path / "dev").write_bytes(b"IMGID:3\nc\tO")
    (tmp_path / "test").write_bytes(b"IMGID:4\nd\tO\n")
    read = released.released_sentences([tmp_path / "train", tmp_path / "dev", tmp_path / "test"])
    # Sentences: [A] closed by the blank line, [] closed by the " \t" line, then b + c + d never closed by a
    # blank line -> 3 sentences; images: 1, 2, "ID x\tO" (bytes 6 on of "an IMGID x\tO"), 3, 4 -> 5.
    assert read.sentences == [[("A", "B-PER")], [], [("b", None), ("c", "O"), ("d", "O")]]
    assert read.img_ids == ["1", "2", "ID x\tO", "3", "4"]
    assert read.datasplit == [0, 3, 4, 5]


def test_chunks_follow_get_chunks():
    # B-PER opens PER; '0' is type '0' -> closes PER(0,1) and opens '0'; the second '0' continues it; O closes
    # it (1,3); I-LOC after O opens LOC(4,...); I-LOC continues; B-LOC opens a new LOC; end closes LOC(7,8).
    tags = ["B-PER", "0", "0", "O", "I-LOC", "I-LOC", "O", "B-LOC"]
    assert released.released_chunks(tags) == [("PER", 0, 1), ("0", 1, 3), ("LOC", 4, 6), ("LOC", 7, 8)]
    # I-ORG after I-PER: other type -> new chunk; I-X after '0' -> new chunk of type X.
    assert released.released_chunks(["I-PER", "I-ORG", "0", "I-ORG"]) == [
        ("PER", 0, 1), ("ORG", 1, 2), ("0", 2, 3), ("ORG", 3, 4)]


def test_authors_score_keeps_the_last_35_tokens():
    # 40 tokens: gold PER at token 2 (outside the window of tokens 5-39) and LOC at token 38; the prediction finds
    # only the LOC. Window: gold {LOC(33,34)}, predicted {LOC(33,34)} -> 1 correct of 1 and 1: P = R = F1 = 1.
    # (Scored on every token it would be R = 1/2.)
    gold = ["O"] * 40
    gold[2], gold[38] = "B-PER", "B-LOC"
    pred = ["O"] * 40
    pred[38] = "B-LOC"
    score = released.authors_score([gold], [pred])
    assert (score.precision, score.recall, score.f1) == (1.0, 1.0, 1.0)
    assert (score.tweets, score.tokens, score.gold_entities) == (1, 35, 1)
    # Given only the window's 35 predicted tags (what a front-padded model outputs), the same numbers.
    assert released.authors_score([gold], [pred[-35:]]) == score
    # window=40 scores all: gold 2, predicted 1, correct 1 -> P = 1, R = 1/2, F1 = 2/3.
    wide = released.authors_score([gold], [pred], window=40)
    assert (wide.precision, wide.recall, wide.f1, wide.gold_entities) == (1.0, 0.5, pytest.approx(2 / 3), 2)
    with pytest.raises(ValueError, match="34 predicted tags for 40 tokens"):
        released.authors_score([gold], [pred[-34:]])


def test_authors_score_counts_a_predicted_pad_label_as_a_chunk():
    # gold [B-PER, I-PER, O, B-LOC] -> {PER(0,2), LOC(3,4)}; pred [B-PER, 0, O, B-LOC] -> {PER(0,1), 0(1,2),
    # LOC(3,4)}: correct 1 (LOC) -> P = 1/3, R = 1/2, F1 = 2*(1/3)*(1/2)/(5/6) = 0.4; token accuracy 3/4.
    score = released.authors_score([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "0", "O", "B-LOC"]])
    assert (score.precision, score.recall, score.f1) == (pytest.approx(1 / 3), 0.5, pytest.approx(0.4))
    assert (score.predicted_entities, score.correct_entities, score.gold_entities, score.accuracy) == (3, 1, 2, 0.75)
    # A run of '0' is one predicted chunk, never correct: gold has none here, so 0 correct -> P = R = F1 = 0.
    zeros = released.authors_score([["O", "O", "O"]], [["0", "0", "O"]])
    assert (zeros.predicted_entities, zeros.correct_entities, zeros.f1) == (1, 0, 0.0)


def test_authors_score_is_zero_without_a_correct_chunk_and_rejects_empty_tweets():
    # No prediction at all: 0 correct -> P = R = F1 = 0 (no division by the 0 predictions).
    none = released.authors_score([["B-PER", "O"]], [["O", "O"]])
    assert (none.precision, none.recall, none.f1, none.predicted_entities, none.gold_entities) == (0, 0, 0, 0, 1)
    # Nothing to find and nothing found: still 0, not 1.
    assert released.authors_score([["O"]], [["O"]]).f1 == 0
    with pytest.raises(ValueError, match="empty"):
        released.authors_score([[]], [[]])


def test_byte_chars():
    # 'é' is 2 UTF-8 bytes, c3 a9; 'a' + 15 x 'é' is 31 bytes, cut at 30 -> 'a', 14 x (c3, a9), then c3 alone.
    assert released.byte_chars("é") == [0xC3, 0xA9]
    cut = released.byte_chars("a" + "é" * 15)
    assert len(cut) == 30 and cut[0] == ord("a") and cut[-1] == 0xC3
    assert len(released.byte_chars("a" + "é" * 15, max_len=None)) == 31
    # Inventory of 'é', 'e', 'ü' (c3 bc): bytes {c3, a9, 65, bc} = 4, code points {é, e, ü} = 3.
    byte_set, code_points = released.char_inventories([[("é", "O"), ("e", "O")], [("ü", "O")]])
    assert (len(byte_set), len(code_points)) == (4, 3)


def test_pad_row_and_word_matrix():
    dim = 4
    ones = np.ones(dim)
    # "pad" has a vector: row 0 is that vector.
    assert np.array_equal(released.pad_row_vector({"pad": ones}, dim=dim), ones)
    # No "pad": a uniform(-0.25, 0.25) draw, the same for the same seed, not zeros.
    row = released.pad_row_vector({}, dim=dim, rng=np.random.default_rng(3))
    assert np.array_equal(row, np.random.default_rng(3).uniform(-0.25, 0.25, dim))
    assert np.all(np.abs(row) <= 0.25) and np.any(row != 0)
    # Vocabulary PAD 0, Obama 1, Über 2 -> 3 + 1 = 4 rows. 'Obama' is found as 'obama' (ASCII lowered); 'Über'
    # stays 'Über' (Python 2 byte strings lower ASCII only), misses 'über' and gets a draw; row 3 stays zero.
    vectors = {"pad": ones, "obama": 2 * ones, "über": 3 * ones}
    matrix = released.released_word_matrix({"PAD": 0, "Obama": 1, "Über": 2}, vectors, dim=dim,
                                           rng=np.random.default_rng(0))
    assert matrix.shape == (4, dim)
    assert np.array_equal(matrix[0], ones) and np.array_equal(matrix[1], 2 * ones)
    assert not np.array_equal(matrix[2], 3 * ones) and np.all(np.abs(matrix[2]) <= 0.25)
    assert np.array_equal(matrix[3], np.zeros(dim))


def plain_tweets(path):
    """The tweets of one file read the ordinary way (blocks between blank lines): [(img_id, [tokens])]."""
    tweets = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        assert lines[0].startswith("IMGID:")
        tweets.append((lines[0][len("IMGID:"):], [line.split("\t")[0] for line in lines[1:]]))
    return tweets


def test_real_twitter2015_as_released():
    folder = pathlib.Path(real_data_folder("TWITTER2015_DIR", "train/dev/test"))
    files = [folder / split for split in released.SPLITS]
    plain = {split: plain_tweets(path) for split, path in zip(released.SPLITS, files)}
    assert [len(plain[split]) for split in released.SPLITS] == [4000, 1000, 3257]

    read = released.released_sentences(files)
    assert (len(read.sentences), len(read.img_ids)) == (8255, 8257)
    assert read.datasplit == [0, 4000, 5000, 8257]
    pairing = released.released_pairing(read)
    train, dev, test = (pairing[split] for split in released.SPLITS)
    assert (len(train), len(dev), len(test)) == (4000, 1000, 3255)
    # train slot 3999 = train tweet 3999 + dev tweet 0, with train image 3999.
    assert train[3999].origins == (("train", 3999), ("dev", 0))
    assert train[3999].tokens == plain["train"][3999][1] + plain["dev"][0][1]
    # dev slot 0 = dev tweet 1 with dev image 0; one off up to slot 997; slot 998 = dev 999 + test 0; 999 = test 1.
    assert dev[0].origins == (("dev", 1),) and dev[0].tokens == plain["dev"][1][1]
    assert dev[0].img_id == plain["dev"][0][0] != plain["dev"][1][0]
    assert all(dev[i].origins == (("dev", i + 1),) and dev[i].img_id == plain["dev"][i][0] for i in range(998))
    assert dev[998].origins == (("dev", 999), ("test", 0)) and dev[999].origins == (("test", 1),)
    # test: 3,255 tweets (test 2-3256), slot i with test image i (two off); test images 3255 and 3256 unused.
    assert all(slot.origins == (("test", i + 2),) and slot.tokens == plain["test"][i + 2][1]
               and slot.img_id == plain["test"][i][0] for i, slot in enumerate(test))
    # Characters: 133 distinct UTF-8 bytes against 126 distinct code points over train+dev+test tokens.
    byte_set, code_points = released.char_inventories(read.sentences)
    assert (len(byte_set), len(code_points)) == (133, 126)
