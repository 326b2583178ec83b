"""Small helpers shared by the scripts: logging, seeding, atomic writes, downloads of public resources."""
import contextlib
import errno
import fcntl
import glob
import json
import logging
import os
import random
import resource
import sys
import tempfile
import threading
import zipfile

import numpy as np
import torch

logger = logging.getLogger(__name__)


def init_logger(verbose=False):
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S",
                        level=logging.DEBUG if verbose else logging.INFO)


def _status_kb(field):
    """A field of /proc/self/status in KiB (Linux), or None where there is no such file or field."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_gb():
    """Peak resident memory of this process so far, in GB (10^9 bytes). Linux's VmHWM belongs to the process's own
    address space, so a child started by fork+exec does not inherit its parent's peak (getrusage does)."""
    peak_kb = _status_kb("VmHWM")
    if peak_kb is not None:
        return peak_kb * 1024 / 1e9
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 1e9


class AnonymousMemorySampler:
    """Samples this process's anonymous resident memory (Linux's RssAnon: heap, tensors, everything the process
    cannot give back to the kernel, unlike the page cache of a memory-mapped file) every `interval` seconds in a
    daemon thread and keeps the peak. `peak_gb` is None off Linux."""

    def __init__(self, interval=0.05):
        self.interval = interval
        self.peak_kb = _status_kb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self):
        now = _status_kb("RssAnon")
        if now is not None:
            self.peak_kb = max(self.peak_kb or 0, now)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def peak_gb(self):
        return None if self.peak_kb is None else self.peak_kb * 1024 / 1e9


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes: a crash or Ctrl-C mid-write never leaves a half file under the final name.

class OutputError(OSError):
    """An output that could not be written (disk full, no permission, a file where a folder should be)."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file under the user's umask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block finishes. The final file gets
    the permissions the user's umask asks for (mkstemp alone would leave it readable by its owner only). A failure
    to write (full disk, permissions) becomes an OutputError that names the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp_path = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise OutputError(exc.errno, f"{path}: could not be written ({reason}). Free some space, fix the "
                                     f"permissions, or write elsewhere (e.g. another --model_dir).") from None
    finally:
        if tmp_path is not None and os.path.exists(tmp_path):
            os.remove(tmp_path)


def atomic_write_text(path, text):
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_json(path, data):
    """Strict JSON: a NaN or infinity is a bug to report, not a file that other tools cannot parse."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False))


def atomic_torch_save(obj, path):
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "wb") as f:  # through a Python file, a full disk raises OSError (not torch's RuntimeError)
            torch.save(obj, f)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is when it arrives, and handled as Ctrl-C is."""
    signal_name = "SIGTERM"


class FolderInUse(RuntimeError):
    """Another process is writing into the same output folder."""


LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder):
    """Hold an exclusive lock on `folder` (its `.lock` file, which names the owner's pid) for the duration of the
    block; raise FolderInUse at once if another process holds it. The operating system releases the lock when its
    owner exits, however it exits, so a crashed run never leaves the folder locked."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    with open(path, "a+", encoding="ascii") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            raise FolderInUse(f"{folder} is in use by another run (process {owner}, lock file {path}). Wait for it "
                              f"to finish, or write to another folder (--model_dir).") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


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
