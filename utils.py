"""Small helpers shared by the scripts: logging, seeding, atomic writes, downloads of public resources."""
import contextlib
import glob
import logging
import os
import random
import sys
import tempfile
import zipfile

import numpy as np
import torch

logger = logging.getLogger(__name__)


def init_logger(verbose=False):
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S",
                        level=logging.DEBUG if verbose else logging.INFO)


def peak_memory_gb():
    """Peak resident memory of this process so far, in GB (10^9 bytes). Linux's VmHWM belongs to the process's own
    address space, so a child started by fork+exec does not inherit its parent's peak (getrusage does)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    import resource
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 1e9


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes: a crash or Ctrl-C mid-write never leaves a half file under the final name.

@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block finishes."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def atomic_write_text(path, text):
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_torch_save(obj, path):
    with atomic_path(path) as tmp_path:
        torch.save(obj, tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Downloads. Everything a run needs has a public location (see README); a download goes to `<dest>.part` and is
# renamed onto `<dest>` only once it is complete and passes a sanity check, so the loaders never see a half file.

TWITTER2015_URL = "https://raw.githubusercontent.com/monologg/NER-Multimodal-pytorch/master/data/{split}"
VGG_FEATURES_GDRIVE_ID = "1q9CRm5gCuU9EVEA6Y4xYp6naskTL0bs4"
VGG_FEATURES_URL = "https://drive.google.com/uc?id=" + VGG_FEATURES_GDRIVE_ID
WORD_VECTORS_URL = "https://raw.githubusercontent.com/monologg/NER-Multimodal-pytorch/master/wordvec/word_vector_200d.vec"
VGG16_WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


class DownloadError(RuntimeError):
    """A download that failed; the message says what, where to, and how to do without it."""


def check_torch_zip(path):
    """Sanity check for a .pt/.pth file: torch's zip container, complete (a cut-off file has no zip directory)."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a complete torch file (no zip directory at its end)")


def check_text_lines(path, min_fields=2):
    """Sanity check for a downloaded text file: UTF-8, and its first non-empty line has `min_fields` fields."""
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                if len(line.split()) < min_fields:
                    raise ValueError(f"first line has fewer than {min_fields} fields: {line[:80]!r}")
                return
    raise ValueError("the file is empty")


def download(url, dest, check=None, avoid_hint="", quiet=False):
    """Fetch `url` to `dest` through `<dest>.part`, with a progress bar (gdown handles Google Drive links too).

    `check(path)` raises ValueError when the finished file is not sane. On any failure the partial file is
    removed and DownloadError names the URL, the destination and `avoid_hint` (the flags that avoid the need).
    """
    import gdown  # imported here: only a run that downloads needs it

    dest = os.fspath(dest)
    part = dest + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    logger.info("Downloading %s -> %s", url, dest)

    def fail(reason):
        for leftover in glob.glob(glob.escape(part) + "*"):  # ours, and gdown's own `<part>XXXX.part`
            os.remove(leftover)
        hint = f"\n  To do without it: {avoid_hint}" if avoid_hint else ""
        return DownloadError(f"Could not download {url}\n  to {dest}: {reason}\n"
                             f"  Download it by hand to that path, or check your network connection.{hint}")

    try:
        got = gdown.download(url=url, output=part, quiet=quiet, resume=False)
    except Exception as exc:  # noqa: BLE001 - any transport failure becomes one clear message
        raise fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if got is None or not os.path.exists(part):
        raise fail("nothing was received")
    if os.path.getsize(part) == 0:
        raise fail("the server sent an empty file")
    if check is not None:
        try:
            check(part)
        except (ValueError, UnicodeDecodeError) as exc:
            raise fail(f"the downloaded file is not usable ({exc})") from None
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, headless). Sizes are fixed in inches at DPI dots per inch, so a PNG's size is predictable.

DPI = 100


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_training_curve(history, path):
    """Dev F1 and training loss per evaluation (epochs on the x axis): an 8 x 4 inch PNG."""
    plt = _pyplot()
    epochs = [entry["epoch"] for entry in history]
    fig, loss_axis = plt.subplots(figsize=(8, 4), dpi=DPI)
    loss_axis.plot(epochs, [entry["train_loss"] for entry in history], "o-", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss (CRF NLL per tweet)", color="tab:blue")
    f1_axis = loss_axis.twinx()
    f1_axis.plot(epochs, [100 * entry["dev_f1"] for entry in history], "s-", color="tab:red")
    f1_axis.set_ylabel("dev entity F1 (%)", color="tab:red")
    fig.tight_layout()
    with atomic_path(path) as tmp_path:
        fig.savefig(tmp_path, format="png", dpi=DPI)
    plt.close(fig)


ATTENTION_COLUMNS = 6


def attention_figure_size(num_words):
    """(width, height) in pixels of the attention PNG of a tweet with `num_words` words."""
    columns = min(num_words, ATTENTION_COLUMNS)
    rows = -(-num_words // ATTENTION_COLUMNS)
    return 2 * columns * DPI, 2 * rows * DPI


def plot_visual_attention(words, alpha, path, image=None):
    """One 7 x 7 panel per word: that word's attention over the image regions (row-major, as VGG16's pool5 grid),
    drawn over the image when it is given (a PIL image), else on its own. Panels are 2 x 2 inches."""
    plt = _pyplot()
    width, height = attention_figure_size(len(words))
    columns, rows = width // (2 * DPI), height // (2 * DPI)
    fig, axes = plt.subplots(rows, columns, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
    backdrop = np.asarray(image.convert("RGB").resize((224, 224))) if image is not None else None
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i >= len(words):
            continue
        grid = np.asarray(alpha[i], dtype=np.float32).reshape(7, 7)
        if backdrop is not None:
            axis.imshow(backdrop)
            axis.imshow(grid, cmap="jet", alpha=0.5, extent=(0, 224, 224, 0), interpolation="bilinear")
        else:
            axis.imshow(grid, cmap="viridis", interpolation="nearest")
        axis.set_title(words[i][:20], fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.02, wspace=0.1, hspace=0.25)
    with atomic_path(path) as tmp_path:
        fig.savefig(tmp_path, format="png", dpi=DPI)
    plt.close(fig)
