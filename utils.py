"""Small helpers shared by the scripts: logging, seeding, atomic writes, downloads of public resources."""
import contextlib
import glob
import logging
import os
import random
import tempfile
import zipfile

import numpy as np
import torch

logger = logging.getLogger(__name__)


def init_logger(verbose=False):
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S",
                        level=logging.DEBUG if verbose else logging.INFO)


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
