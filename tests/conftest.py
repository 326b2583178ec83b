"""Shared helpers: small IMGID-CoNLL files and synthetic VGG features written by the tests themselves."""
import os
import random
import signal
import sys

# One thread per process, for this process and every program a test starts (they inherit the environment). The
# tests' tensors are tiny: extra threads buy nothing, and on a busy machine threads waiting for a core spin and
# made the suite 4-9 times slower.
for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import data_loader as data  # noqa: E402 - the project's modules import once ROOT is on the path
import image_features  # noqa: E402
import vgg  # noqa: E402

PEOPLE = ["Obama", "Messi", "Beyonce", "Zimmerman", "Taylor"]
PLACES = ["Paris", "London", "Texas", "Boston", "Kenya"]
FILLER = ["the", "is", "in", "at", "today", "love", "#fun", "@friend", "http://t.co/x1", "!!!", "42", "so", "big"]


def make_tweets(n, seed, min_len=3, max_len=12):
    """n tweets as (img_id, [(token, tag)]): people are PER, places LOC (one or two tokens), the rest O."""
    rng = random.Random(seed)
    tweets = []
    for i in range(n):
        tokens = []
        for _ in range(rng.randint(min_len, max_len)):
            roll = rng.random()
            if roll < 0.15:
                tokens.append((rng.choice(PEOPLE), "B-PER"))
            elif roll < 0.25:
                tokens += [(rng.choice(PLACES), "B-LOC"), ("City", "I-LOC")]
            else:
                tokens.append((rng.choice(FILLER), "O"))
        tweets.append((f"{seed}_{i}", tokens))
    return tweets


def write_conll(path, tweets):
    """IMGID-CoNLL file of [(img_id, [(token, tag)])]; a tag of None writes the token alone (an untagged file)."""
    with open(path, "w", encoding="utf-8") as f:
        for img_id, tokens in tweets:
            f.write(f"IMGID:{img_id}\n")
            for token, tag in tokens:
                f.write(f"{token}\t{tag}\n" if tag is not None else f"{token}\n")
            f.write("\n")
    return path


def write_public_style(path, tweets):
    """write_conll, then drop the blank line after the last tweet: the file ends with its last token line, as the
    public Twitter-2015 files do (the released reader then merges it with the next file's first tweet)."""
    write_conll(path, tweets)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n\n")
    path.write_text(text[:-1], encoding="utf-8")
    return path


def write_features(path, img_ids, dtype=torch.float32, seed=0, shape=(49, 512)):
    generator = torch.Generator().manual_seed(seed)
    feats = {img_id: torch.rand(*shape, generator=generator).to(dtype) for img_id in img_ids}
    torch.save(feats, path)
    return feats


def uniform_png(path, rgb, size=(224, 224)):
    Image.new("RGB", size, rgb).save(path, format="PNG")  # lossless: every pixel is exactly `rgb`
    return str(path)


def torch_checkpoint(path, seed=1):
    """A random-weight VGG16 in torchvision's checkpoint format."""
    torch.manual_seed(seed)
    torch.save(vgg.VGG16Features().state_dict(), path)
    return str(path)


def data_folder(tmp_path, good=("a", "b"), bad=("bad",), missing=("gone",)):
    """<tmp_path>/data: a `train` file of the ids, and in `ner_img` an image per good id, an HTML page per bad id."""
    data_dir = tmp_path / "data"
    (data_dir / "ner_img").mkdir(parents=True)
    for i, img_id in enumerate(good):
        uniform_png(data_dir / "ner_img" / f"{img_id}.jpg", (10 + 90 * i, 200, 120), size=(60 + i, 40))
    for img_id in bad:
        (data_dir / "ner_img" / f"{img_id}.jpg").write_text("<html>")
    write_conll(data_dir / "train", [(i, [("x", "O")]) for i in (*good, *bad, *missing)])
    return data_dir


def sigint_default():
    """preexec_fn for a child that a test interrupts with SIGINT: a background job of a non-interactive shell
    ignores SIGINT and its children inherit that, so Ctrl-C would never reach them. Python installs its
    KeyboardInterrupt handler only where SIGINT is not ignored at start-up."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def real_data_folder(variable, files):
    """The folder of a real data set named by the environment `variable`: skipped (saying so) when it is unset,
    failed when it does not exist."""
    folder = os.environ.get(variable)
    if not folder:
        pytest.skip(f"{variable} is not set (point it at the folder with {files})")
    assert os.path.isdir(folder), f"{variable}={folder} does not exist"
    return folder


def random_examples(lengths, word_len=6, seed=0, num_words=30, num_chars=20, num_tags=5):
    """Examples of random words (of different lengths) and tags, and a FeatureTable with a random image per tweet."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for i, n in enumerate(lengths):
        chars = torch.randint(2, num_chars, (n, word_len), generator=generator)
        for t in range(n):  # words of different lengths
            chars[t, 1 + (t % word_len):] = 0
        examples.append(data.Example(i, torch.randint(2, num_words, (n,), generator=generator), chars,
                                     torch.randint(0, num_tags, (n,), generator=generator), i + 1))
    regions = [torch.zeros(49, 512)] + [torch.rand(49, 512, generator=generator) for _ in lengths]
    return examples, image_features.FeatureTable(regions, {}, [])


class TensorSizeLimit(TorchDispatchMode):
    """Inside `with TensorSizeLimit(max_bytes):` every tensor an operation makes must hold at most `max_bytes` of
    storage (a view or an expand makes none); the first larger one fails at once, before a quadratic model can
    go on to take gigabytes. `largest` is the largest storage seen."""

    def __init__(self, max_bytes):
        super().__init__()
        self.max_bytes, self.largest = max_bytes, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                size = tensor.untyped_storage().nbytes()
                self.largest = max(self.largest, size)
                assert size <= self.max_bytes, f"{func} made a {tuple(tensor.shape)} tensor of {size:,} bytes"
        return out


def train_on_batch(model, batch, learning_rate, steps=30):
    """`steps` Adam updates of `model` on one batch; returns the loss before the first and after the last."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    first = model.loss(batch).item()
    for _ in range(steps):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return first, model.loss(batch).item()


@pytest.fixture
def tiny_data(tmp_path):
    """A data folder with train/dev/test and a features file; dev has a tweet longer than max_seq_len=8."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    splits = {"train": make_tweets(40, 1), "dev": make_tweets(12, 2, max_len=20), "test": make_tweets(15, 3)}
    for name, tweets in splits.items():
        write_conll(data_dir / name, tweets)
    ids = [img_id for tweets in splits.values() for img_id, _ in tweets]
    write_features(data_dir / "img_vgg_features.pt", ids)
    return data_dir, splits


SMALL_MODEL = ["--hidden_dim", "16", "--word_emb_dim", "8", "--char_emb_dim", "6", "--final_char_dim", "8",
               "--num_filters", "4", "--num_train_epochs", "2", "--no_w2v", "--no_progress", "--offline",
               "--max_seq_len", "8"]


def run_main(tmp_path, data_dir, *extra):
    import main
    return main.main(["--data_dir", str(data_dir), "--model_dir", str(tmp_path / "model"), *SMALL_MODEL, *extra])
