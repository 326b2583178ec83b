"""Small helpers shared by the scripts: logging, seeding, atomic writes, downloads of public resources."""
import argparse
import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import random
import resource
import shutil
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


def int_at_least(minimum):
    """argparse type: an integer >= minimum (one line naming the flag and the value otherwise)."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes: a crash or Ctrl-C mid-write never leaves a half file under the final name.

class OutputError(OSError):
    """An output that could not be written (disk full, no permission, a file where a folder should be)."""

    def __str__(self):
        return self.strerror  # the message alone, without OSError's "[Errno 28] " in front


def _umask():
    """The process's umask now: read from /proc on Linux (changing nothing), elsewhere set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode():
    """What open() gives a new file under the user's umask (asked at each write: a program may change it)."""
    return 0o666 & ~_umask()


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
        os.chmod(tmp_path, file_mode())
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
# Downloads. Every location is in resources.py. A download goes to a partial file of its own in the destination
# folder (`<dest>.<pid>.<random>.part`, so two runs fetching the same file never touch each other's) and is renamed
# onto `<dest>` only once it is complete and passes its checks, so the loaders never see a half file.



class DownloadError(RuntimeError):
    """A download that failed; the message says what, where to, and how to do without it."""


def check_torch_zip(path):
    """Sanity check for a .pt/.pth file: torch's zip container, complete (a cut-off file has no zip directory)."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a complete torch file (no zip directory at its end)")


def check_zip_archive(path):
    """Sanity check for a .zip archive: complete (its central directory is there) and not empty."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a complete zip archive (no zip directory at its end)")
    with zipfile.ZipFile(path) as archive:
        if not archive.namelist():
            raise ValueError("the zip archive is empty")


def check_text_lines(path, min_fields=2):
    """Sanity check for a downloaded text file: UTF-8, and its first non-empty line has `min_fields` fields."""
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                if len(line.split()) < min_fields:
                    raise ValueError(f"first line has fewer than {min_fields} fields: {line[:80]!r}")
                return
    raise ValueError("the file is empty")


def sha256_of(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, dest, check=None, avoid_hint="", quiet=False, hash_prefix=None):
    """Fetch `url` to `dest` through a partial file of this call's own, with a progress bar (gdown also handles
    Google Drive links). The sha256 of the file is logged.

    `hash_prefix`: the file's sha256 hex digest must start with it (as torch.hub.download_url_to_file).
    `check(path)` raises ValueError when the finished file is not sane. On any failure the partial file is
    removed and DownloadError names the URL, the destination and `avoid_hint` (the flags that avoid the need).
    """
    import gdown  # imported here: only a run that downloads needs it

    dest = os.fspath(dest)
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f"{os.path.basename(dest)}.{os.getpid()}.", suffix=".part", dir=folder)
    os.close(fd)
    logger.info("Downloading %s -> %s", url, dest)

    def fail(reason):
        hint = f"\n  To do without it: {avoid_hint}" if avoid_hint else ""
        return DownloadError(f"Could not download {url}\n  to {dest}: {reason}\n"
                             f"  Download it by hand to that path, or check your network connection.{hint}")

    try:
        try:
            got = gdown.download(url=url, output=part, quiet=quiet, resume=False)
        except Exception as exc:  # noqa: BLE001 - any transport failure becomes one clear message
            raise fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if got is None or not os.path.exists(part):
            raise fail("nothing was received")
        if os.path.getsize(part) == 0:
            raise fail("the server sent an empty file")
        digest = sha256_of(part)
        logger.info("Received %s: %d bytes, sha256 %s", url, os.path.getsize(part), digest)
        if hash_prefix is not None and not digest.startswith(hash_prefix):
            raise fail(f"its sha256 is {digest}, expected one starting with {hash_prefix} "
                       f"(a corrupted or a different file)")
        if check is not None:
            try:
                check(part)
            except (ValueError, UnicodeDecodeError) as exc:
                raise fail(f"the downloaded file is not usable ({exc})") from None
        os.chmod(part, 0o644)  # as a plain new file; the temporary one was private to us
        os.replace(part, dest)
    finally:  # also on Ctrl-C: our partial file, and gdown's own `<part>XXXXXXXX.part`, never stay behind
        for leftover in glob.glob(glob.escape(part) + "*"):
            os.remove(leftover)
    return dest


# ----------------------------------------------------------------------------------------------------------------
# Image archives: one zip holds the image folders of several data sets; only the folder a data set needs is
# extracted, into a temporary folder that is renamed into place once complete.

def images_hint(dataset, image_dir, archive_path):
    """Where to put the images of `dataset` by hand."""
    archive = dataset.images
    return (f"put the images in {image_dir}{os.sep} as <id>.jpg: download {archive.file_name} from {archive.page}, "
            f"then either save it as {archive_path} (the next run extracts it) or extract its folder "
            f"{dataset.archive_folder}/ to {image_dir}")


def fetch_file(path, url, check, avoid_hint, offline):
    """Return `path`, downloading it from `url` first if it is missing (and a URL is known)."""
    if os.path.exists(path) or url is None:  # a folder in its place is for the reader to report, not to download
        return path
    if offline:
        raise DownloadError(f"{path} is missing and --offline forbids downloading it from {url}.\n"
                            f"  Put the file there, or: {avoid_hint}")
    return download(url, path, check=check, avoid_hint=avoid_hint)


def fetch_images(dataset, data_dir, offline=False, img_dir=None, quiet=False):
    """Return the image folder `<data_dir>/<img_dir>` of `dataset` (a resources.Dataset; `img_dir` defaults to its
    own), first downloading its image archive to `<data_dir>/<archive name>` and extracting the data set's folder
    when the image folder is missing. A complete archive already there is reused (and kept afterwards)."""
    image_dir = os.path.join(data_dir, img_dir or dataset.img_dir)
    if os.path.isdir(image_dir):
        return image_dir
    archive_path = os.path.join(data_dir, dataset.images.file_name)
    hint = images_hint(dataset, image_dir, archive_path)
    if os.path.isfile(archive_path) and zipfile.is_zipfile(archive_path):
        logger.info("%s is missing; extracting it from %s, already downloaded", image_dir, archive_path)
    elif offline:
        found = (f"{archive_path} is not a complete zip archive" if os.path.exists(archive_path)
                 else f"{archive_path} is not there either")
        raise DownloadError(f"The images of {dataset.name} are missing: {image_dir} does not exist and {found}; "
                            f"--offline forbids downloading it.\n  To fix: {hint}.")
    else:
        download(dataset.images.url, archive_path, check=check_zip_archive, avoid_hint=hint, quiet=quiet)
    try:
        count = extract_folder(archive_path, dataset.archive_folder, image_dir)
    except (ValueError, zipfile.BadZipFile) as exc:
        raise DownloadError(f"Could not extract the images of {dataset.name} from {archive_path}: {exc}\n"
                            f"  Replace the archive, or {hint}.") from None
    logger.info("Extracted %d files of %s/ to %s (%s can be deleted if no other data set needs it)",
                count, dataset.archive_folder, image_dir, archive_path)
    return image_dir


def archive_members(archive, folder):
    """{member name: path inside `folder`} for the members of `archive` (a ZipFile) under `folder`, which may sit
    at the top or under top-level folders (`IJCAI2019_data/twitter2017_images/...`). Refuses the whole archive if
    any member name is absolute or climbs with `..` (path traversal)."""
    names = archive.namelist()
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
            raise ValueError(f"unsafe member {name!r} (absolute, or climbing out with '..'); "
                             f"refusing to extract anything from this archive")
    by_prefix = {}  # folders leading to `folder` -> {member name: path inside it}
    for name in names:
        parts = name.split("/")
        if folder not in parts[:-1] or parts[0] == "__MACOSX":  # __MACOSX: resource forks of a zip made on a Mac
            continue
        at = parts.index(folder)
        by_prefix.setdefault("/".join(parts[:at]), {})[name] = "/".join(parts[at + 1:])
    if not by_prefix:
        tops = sorted({name.split("/")[0] for name in names})
        raise ValueError(f"it has no folder {folder}/ (its top-level entries: {', '.join(tops[:10])}"
                         f"{', ...' if len(tops) > 10 else ''})")
    shallowest = min(by_prefix, key=lambda prefix: len(prefix.split("/")) if prefix else 0)
    return by_prefix[shallowest]


def extract_folder(archive_path, folder, dest):
    """Extract the files under `folder/` of the zip `archive_path` (wherever that folder sits) into `dest`, which
    appears only once complete. Returns the number of files written."""
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.{os.getpid()}.", suffix=".extracting", dir=parent)
    try:
        count = 0
        with zipfile.ZipFile(archive_path) as archive:
            for name, inside in archive_members(archive, folder).items():
                target = os.path.join(staging, *inside.split("/"))
                if os.path.commonpath([staging, os.path.abspath(target)]) != staging:
                    raise ValueError(f"member {name!r} would be written outside {dest}")
                if name.endswith("/"):
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.open(name) as source, open(target, "wb") as sink:  # reading to the end checks the CRC
                    shutil.copyfileobj(source, sink)
                count += 1
        if count == 0:
            raise ValueError(f"its folder {folder}/ holds no files")
        os.chmod(staging, 0o755)  # as a plain new folder; the temporary one was private to us
        try:
            os.rename(staging, dest)
        except OSError:
            if not os.path.isdir(dest):  # another run finished first: its folder is as good as ours
                raise
            logger.info("%s appeared while extracting (another run); keeping it", dest)
        return count
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, headless). Sizes are fixed in inches at DPI dots per inch, so a PNG's size is predictable.

DPI = 100


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def training_curve_figure(history):
    """Dev F1 (%) and training loss per evaluation, epochs on the x axis: a matplotlib figure of 8 x 4 inches."""
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
    return fig


def plot_training_curve(history, path):
    fig = training_curve_figure(history)
    with atomic_path(path) as tmp_path:
        fig.savefig(tmp_path, format="png", dpi=DPI)
    _pyplot().close(fig)


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
