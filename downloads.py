"""Every public location of the project's resources, the data sets main.py knows, and the helpers that fetch them.

A download goes to a partial file of its own in the destination folder (`<dest>.<pid>.<random>.part`, so two runs
fetching the same file never touch each other's) and is renamed onto `<dest>` only once it is complete and passes
its checks, so the loaders never see a half file. Image archives: one zip holds the image folders of several data
sets; only the folder a data set needs is extracted, into a temporary folder renamed into place once complete.

None of these hosts was reachable while this was written (see docs/usage.md, "Data and downloads"); the tests serve
look-alike files from 127.0.0.1.
"""
import glob
import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Public locations

# the seed PyTorch implementation: the authors' Twitter-2015 text and the word vectors filtered to its vocabulary
SEED_REPO_RAW = "https://raw.githubusercontent.com/monologg/NER-Multimodal-pytorch/master"
TWITTER2015_URL = SEED_REPO_RAW + "/data/{file}"
WORD_VECTORS_FILE = "word_vector_200d.vec"
WORD_VECTORS_URL = SEED_REPO_RAW + "/wordvec/" + WORD_VECTORS_FILE

# VGG16 pool5 features of the 8,257 Twitter-2015 images, published with the seed implementation (int id -> (49, 512))
VGG_FEATURES_FILE = "img_vgg_features.pt"
VGG_FEATURES_GDRIVE_ID = "1q9CRm5gCuU9EVEA6Y4xYp6naskTL0bs4"
VGG_FEATURES_URL = "https://drive.google.com/uc?id=" + VGG_FEATURES_GDRIVE_ID

# ImageNet VGG16 weights (torchvision's file); the name carries the first 8 hex digits of the file's sha256
VGG16_WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Keras' Caffe-converted VGG16 in Theano layout, what the authors' extractor loaded (save_vgg_feature.py --preprocess
# caffe/authors reads it; never downloaded automatically)
KERAS_VGG16_TH_WEIGHTS_URL = ("https://github.com/fchollet/deep-learning-models/releases/download/v0.1/"
                              "vgg16_weights_th_dim_ordering_th_kernels_notop.h5")
VGG16_WEIGHTS_SHA256_PREFIX = "397923af"

# Twitter-2015 and Twitter-2017 as released with UMT (Yu et al., ACL 2020): CoNLL text in the repository, the
# images of both in one archive on Google Drive (IJCAI2019_data.zip, first released with TomBERT, IJCAI 2019).
UMT_REPO_RAW = "https://raw.githubusercontent.com/jefferyYu/UMT/master/data"
UMT_IMAGES_GDRIVE_ID = "1PpvvncnQkgDNeBMKVgG2zFYuRhbL873g"


@dataclass(frozen=True)
class ImageArchive:
    """A zip file holding image folders, `<folder>/<id>.jpg`, perhaps under one top-level folder."""
    file_name: str   # the archive's own name; it is kept under this name next to the extracted images
    url: str         # what utils.download fetches (a Google Drive `uc?id=` link is fine: gdown resolves it)
    page: str        # where a person finds it in a browser


UMT_IMAGES = ImageArchive(file_name="IJCAI2019_data.zip",
                          url="https://drive.google.com/uc?id=" + UMT_IMAGES_GDRIVE_ID,
                          page=f"https://drive.google.com/file/d/{UMT_IMAGES_GDRIVE_ID}/view")


# ----------------------------------------------------------------------------------------------------------------
# Data sets

@dataclass(frozen=True)
class Dataset:
    name: str
    split_files: tuple = ("train.txt", "valid.txt", "test.txt")  # (train, dev, test) file names in the data folder
    text_url: str | None = None       # URL of one split file, with `{file}` standing for its name
    img_dir: str = "images"           # image folder inside the data folder, images named <id>.jpg
    images: ImageArchive | None = None  # the archive the images come from
    archive_folder: str | None = None   # the folder inside `images` that holds this data set's images
    entity_types: tuple = ()          # as written in the files' BIO tags
    feature_url: str | None = None    # a published VGG16 feature file (VGG_FEATURES_FILE), if there is one

    @property
    def data_dir(self):
        """The default data folder: ./data/<name>."""
        return os.path.join(".", "data", self.name)

    def file_url(self, file_name):
        """Where `file_name` of this data set can be downloaded from; None for a name that is not one of its splits,
        or a data set with no public copy."""
        return self.text_url.format(file=file_name) if self.text_url and file_name in self.split_files else None


DATASETS = {
    # the authors' release as the seed implementation ships it (files train/dev/test; 4,000 / 1,000 / 3,257 tweets);
    # its images are the folder twitter2015_images/ of UMT's archive (the same tweets and ids), kept as ner_img/
    "twitter2015": Dataset(name="twitter2015", split_files=("train", "dev", "test"), text_url=TWITTER2015_URL,
                           img_dir="ner_img", images=UMT_IMAGES, archive_folder="twitter2015_images",
                           entity_types=("PER", "LOC", "ORG", "OTHER"), feature_url=VGG_FEATURES_URL),
    # Twitter-2017 (Lu et al., ACL 2018) as released with UMT: 3,373 / 723 / 723 tweets, ids such as 17_06_12483
    "twitter2017": Dataset(name="twitter2017", split_files=("train.txt", "valid.txt", "test.txt"),
                           text_url=UMT_REPO_RAW + "/twitter2017/{file}", img_dir="twitter2017_images",
                           images=UMT_IMAGES, archive_folder="twitter2017_images",
                           entity_types=("PER", "LOC", "ORG", "MISC")),
    # the same Twitter-2015 tweets in UMT's copy (its files keep the tag OTHER; UMT's code renames it MISC on reading)
    "twitter2015-umt": Dataset(name="twitter2015-umt", split_files=("train.txt", "valid.txt", "test.txt"),
                               text_url=UMT_REPO_RAW + "/twitter2015/{file}", img_dir="twitter2015_images",
                               images=UMT_IMAGES, archive_folder="twitter2015_images",
                               entity_types=("PER", "LOC", "ORG", "OTHER")),
}




def dataset_named(name):
    """The data set called `name`: one of DATASETS, or a local one in the IMGID format that has no public copy
    (in ./data/<name> unless --data_dir says otherwise; files train.txt, valid.txt, test.txt; images in images/)."""
    return DATASETS.get(name) or Dataset(name=name)


# ----------------------------------------------------------------------------------------------------------------
# Downloads


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
    """Return the image folder `<data_dir>/<img_dir>` of `dataset` (a Dataset; `img_dir` defaults to its
    own), first downloading its image archive to `<data_dir>/<archive name>` and extracting the data set's folder
    when the image folder is missing. A complete archive already there is reused (and kept afterwards)."""
    image_dir = os.path.join(data_dir, img_dir or dataset.img_dir)
    if os.path.isdir(image_dir):
        return image_dir
    if dataset.images is None:
        raise DownloadError(f"{image_dir} does not exist, and {dataset.name} has no public image archive to download "
                            f"it from: put its images there as <id>.jpg, or give their folder with --img_dir.")
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
