"""Pretrained word vectors (GloVe or word2vec text files) for a vocabulary of data_loader.build_vocab: read line by
line, every malformed line counted and the file refused when too many are, each error naming the file and line."""
import logging
import re
from collections import defaultdict

import torch

import utils
from data_loader import DataError, invisible_line_error

logger = logging.getLogger(__name__)

VECTOR_SEPARATOR = re.compile(r"[ \t]+")  # GloVe writes spaces; some converted files use tabs


def _vector_lines(path):
    """(line number, text) of the non-blank lines of a word-vector file, decoded line by line so that a bad byte is
    reported at its own line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{line_no}: byte {raw[exc.start]:#04x} (byte {exc.start} of the line) is "
                                f"not UTF-8. Re-encode the file as UTF-8, or train with --no_w2v.") from None
            if not line.strip(" \t"):
                continue
            if not line.strip():
                raise invisible_line_error(path, line_no, line)
            yield line_no, line


def _header_dim(path, line_no, fields, dim):
    """True for a word2vec header `count dim` (checked against `dim`), False for a vector line."""
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        if int(fields[1]) != dim:
            raise DataError(f"{path}:{line_no}: the header says {fields[1]}-d vectors but --word_emb_dim is "
                            f"{dim}. Use --word_emb_dim {fields[1]} or vectors of {dim} dimensions.")
        return True
    return False


def _vector(values):
    """The vector of a line's number fields, or None when one is not a finite number."""
    try:
        vector = torch.tensor([float(v) for v in values])
    except ValueError:
        return None
    return vector if torch.isfinite(vector).all() else None


def _fill_vectors(path, dim, rows_of, matrix, found):
    """Copy the vectors of `path` into the rows of `matrix` that take them (`rows_of`: file word -> rows), marking
    them in `found`. Returns the counts (vector lines, malformed lines, repeated words, first malformed line)."""
    lines = bad = duplicates = 0
    first_bad = None
    for line_no, line in _vector_lines(path):
        fields = VECTOR_SEPARATOR.split(line.strip(" \t"))
        if lines == 0 and _header_dim(path, line_no, fields, dim):
            continue
        lines += 1
        word, values = fields[0], fields[1:]
        if len(values) != dim and lines == 1:
            raise DataError(f"{path}:{line_no}: {len(values)} numbers after the word, but --word_emb_dim is "
                            f"{dim}. Expected `word v1 ... v{dim}` (fields separated by spaces or tabs); use "
                            f"--word_emb_dim {len(values)} if the file really holds {len(values)}-d vectors.")
        rows = rows_of.get(word) if len(values) == dim else None
        if rows and found[rows[0]]:
            duplicates += 1
            continue
        vector = _vector(values) if rows else None
        if len(values) != dim or (rows and vector is None):
            bad += 1
            first_bad = first_bad or line_no
            continue
        if rows:
            matrix[rows] = vector
            found[rows] = True
    return lines, bad, duplicates, first_bad


def load_word_vectors(path, vocab, dim, max_bad_fraction=0.01, seed=7):
    """Embedding matrix (len(vocab.words), dim) for the vocab from a GloVe or word2vec text file (with or without
    the `count dim` header; fields separated by spaces or tabs). Words without a vector get uniform(-0.25, 0.25),
    PAD gets zeros. Malformed lines are skipped and counted; more than `max_bad_fraction` of them is an error. The
    first vector of a word wins. A vocabulary word takes the vector of `vocab.vector_key(word)`."""
    hint = "Put the file there (--wordvec_dir/--w2v_file) or train with random word embeddings: --no_w2v."
    problem = utils.not_a_file(path)
    if problem:
        kind = "word-vector file not found" if problem == "does not exist" else f"{problem}, not a word-vector file"
        raise DataError(f"{path}: {kind}. {hint}")
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.empty(len(vocab.words), dim).uniform_(-0.25, 0.25, generator=generator)
    matrix[0] = 0.0
    rows_of = defaultdict(list)  # vector-file word -> vocabulary rows that take its vector
    for index, word in enumerate(vocab.words[2:], start=2):
        rows_of[vocab.vector_key(word)].append(index)
    found = torch.zeros(len(vocab.words), dtype=torch.bool)
    try:
        lines, bad, duplicates, first_bad = _fill_vectors(path, dim, rows_of, matrix, found)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}). {hint}") from None
    if lines == 0:
        raise DataError(f"{path}: no vectors in the file. Expected `word v1 ... v{dim}` lines, or use --no_w2v.")
    if bad > max_bad_fraction * lines:
        raise DataError(f"{path}: {bad} of {lines} lines are malformed (first at line {first_bad}); expected "
                        f"`word` and {dim} numbers separated by spaces or tabs.")
    if bad:
        logger.warning("%s: skipped %d malformed lines (first at line %d)", path, bad, first_bad)
    if duplicates:
        logger.warning("%s: %d words appear more than once; the first vector was kept", path, duplicates)
    covered = int(found.sum())
    logger.info("Word vectors: %d of %d vocab words found in %s (%.1f%%); the rest are random", covered,
                len(vocab.words) - 2, path, 100.0 * covered / max(1, len(vocab.words) - 2))
    return matrix
