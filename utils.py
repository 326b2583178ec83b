"""Small helpers shared by the scripts: logging, memory, argument types, seeding, atomic writes, the folder and
output-file locks, SIGTERM."""
import argparse
import contextlib
import errno
import fcntl
import gc
import glob
import json
import logging
import os
import random
import resource
import stat
import sys
import tempfile
import threading

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


def int_at_least(minimum, maximum=None):
    """argparse type: an integer >= minimum (and <= maximum if given); one line naming the flag and the value
    otherwise."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if maximum is not None:
        what = f"an integer from {minimum} to {maximum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def not_a_file(path):
    """None when `path` is a regular file (links followed); else what stands there, to follow the path in a
    message: "does not exist", "is a directory", "is a FIFO (named pipe)", "is a character device", ... Only
    regular files are ever read: a FIFO waits forever, and a device such as /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return f"is {next((name for test, name in kinds if test(mode)), 'not a regular file')}"


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


def _first_file_on_the_way(folder):
    """The nearest existing ancestor of `folder` (itself included) when it is not a folder, else None."""
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return None if os.path.isdir(folder) else folder


def _output_error(path, exc, flag=None):
    """An OutputError naming `path`, why it could not be written, and what to do (`flag`: the option naming it)."""
    in_the_way = _first_file_on_the_way(os.path.dirname(os.path.abspath(path)))
    if exc.errno == errno.ENOSPC:
        reason, advice = "the disk is full", "Free some space"
    elif in_the_way is not None:
        reason, advice = f"{in_the_way} is a file, not a folder", "Move that file"
    else:
        denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        reason, advice = exc.strerror or str(exc), "Fix the permissions" if denied else "Check the path"
    return OutputError(exc.errno, f"{path}: could not be written ({reason}). {advice}, or write "
                                  f"elsewhere{f' (another {flag})' if flag else ''}.")


def _temporary_next_to(path):
    """A new empty file in the folder of `path` (made if missing), named `.<name>.XXXXXXXX.tmp`; its path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    return tmp_path


def check_writable(path, flag=None):
    """Fail now, not after hours of work, where `path` could not be written: a folder in its place, a file where a
    folder of its path should be, no permission, a read-only disk. Makes its folder; leaves no file there."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError(errno.EISDIR, f"{path}: is a folder; {flag or 'the output'} names the file to write. Give "
                                        f"a file name.")
    try:
        os.remove(_temporary_next_to(path))
    except OSError as exc:
        raise _output_error(path, exc, flag) from None


@contextlib.contextmanager
def atomic_path(path, flag=None):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block finishes. The final file gets
    the permissions the user's umask asks for (mkstemp alone would leave it readable by its owner only). A failure
    to write (full disk, permissions) becomes an OutputError that names the path (and `flag`, the option that
    chose it, in its advice). The temporary is removed however the block ends, SIGTERM included where a handler
    turns it into an exception (Terminated); only a process killed outright (SIGKILL) leaves one behind."""
    path = os.fspath(path)
    tmp_path = None
    try:
        tmp_path = _temporary_next_to(path)
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise _output_error(path, exc, flag) from None
    finally:
        if tmp_path is not None and os.path.exists(tmp_path):
            os.remove(tmp_path)


def remove_stale_temporaries(path):
    """Remove the temporaries that atomic_path left next to `path` in a process killed outright (SIGKILL, a power
    cut), and return their paths. Only for the holder of the lock on `path` (file_lock): another writer's temporary
    looks the same."""
    folder, name = os.path.split(os.path.abspath(path))
    stale = glob.glob(os.path.join(glob.escape(folder), glob.escape(f".{name}.") + "?" * 8 + ".tmp"))
    for tmp_path in stale:
        try:
            os.remove(tmp_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("%s: a temporary file left by an interrupted run could not be removed (%s).", tmp_path,
                           exc.strerror)
    return stale


def atomic_write_text(path, text, flag=None):
    with atomic_path(path, flag) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_json(path, data):
    """Strict JSON: a NaN or infinity is a bug to report, not a file that other tools cannot parse."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False))


def atomic_torch_save(obj, path, flag=None):
    with atomic_path(path, flag) as tmp_path:
        with open(tmp_path, "wb") as f:  # through a Python file, a full disk raises OSError (not torch's RuntimeError)
            torch.save(obj, f)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is when it arrives, and handled as Ctrl-C is."""
    signal_name = "SIGTERM"


def raise_terminated(signum, frame):
    """SIGTERM handler: raise Terminated where the program is, so that it stops as on Ctrl-C and its finally blocks
    run (temporaries removed, locks released). Python's default for SIGTERM ends the process on the spot."""
    raise Terminated()


def run_script(main):
    """Run a script's main() and exit with the code it returns. Python's cycle collector scans every object it
    tracks at each full collection (a few in a run, ~0.2 s each once torch's modules are loaded) and once more at
    exit (~1 s). What the imports made lives until the end: it is frozen out of the scans before main(). After
    main(), one collection frees the cycles main() left (their finalizers run), and what is left is frozen too, so
    the exit's scan has next to nothing to do (frozen objects are still freed by reference counting). A default run
    ends ~1.5 s sooner."""
    gc.freeze()
    exit_code = main()
    gc.collect()
    gc.freeze()
    sys.exit(exit_code)


def interrupted_code(signal_name):
    """The exit code of a program stopped by `signal_name`: 128 + the signal's number, as a shell reports it."""
    return 143 if signal_name == "SIGTERM" else 130


class FolderInUse(RuntimeError):
    """Another process is writing into the same output folder (or output file)."""


LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder, shared=False):
    """Hold a lock on `folder` (its `.lock` file) for the duration of the block; raise FolderInUse at once if another
    process holds it in a way that excludes ours. Exclusive (a writer, whose pid the file names) creates the folder;
    shared (readers, any number at once) needs no write access: where the lock file cannot be made (a read-only
    folder, which no run can write into either), the block runs without it. The operating system releases a lock
    when its owner exits, however it exits, so a crashed run never leaves the folder locked."""
    if not shared:
        os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    try:
        f = open(path, "a+" if not shared or not os.path.exists(path) else "r", encoding="ascii")
    except OSError:
        if not shared:
            raise
        yield  # read-only folder without a lock file: nobody can be writing into it
        return
    with f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip()
            who = f"process {owner}" if owner else "other processes reading it"
            raise FolderInUse(f"{folder} is in use by another run ({who}, lock file {path}). Wait for it to finish, "
                              f"or use another folder (--model_dir).") from None
        if not shared:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        try:
            yield
        finally:
            if not shared:
                f.seek(0)
                f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _holds_path(f, path):
    """Whether the open file `f` is still the file named `path` (a lock file's holder removes it on release)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _lock_exclusively(lock_path, path, flag):
    """The lock file `lock_path` opened and locked (exclusive), or FolderInUse naming its holder's pid."""
    while True:
        try:
            f = open(lock_path, "a+", encoding="ascii")
        except OSError as exc:
            raise _output_error(lock_path, exc, flag) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise FolderInUse(f"{path} is in use by another process (process {owner}, lock file {lock_path}). Wait "
                              f"for it to finish, or write elsewhere{f' (another {flag})' if flag else ''}.") from None
        if _holds_path(f, lock_path):
            return f
        f.close()  # its holder removed it between our open and our lock: lock the file now named so


@contextlib.contextmanager
def file_lock(path, flag=None):
    """Hold an exclusive lock on the output file `path` for the duration of the block: the lock file `<path>.lock`
    next to it (flock, naming our pid), removed on release. The file itself cannot carry the lock, since
    atomic_path replaces it by rename (a new inode); its folder could, but would also shut out other outputs
    written next to it. Raise FolderInUse at once if another process holds it. The operating system releases a
    lock when its owner exits, however it exits: a killed run leaves at most an unlocked lock file, which the next
    run takes."""
    lock_path = os.fspath(path) + ".lock"
    with _lock_exclusively(lock_path, path, flag) as f:
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock_path)  # still locked: whoever opened it meanwhile sees it gone and starts again
