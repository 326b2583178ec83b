"""The cached VGG16 image features of a data set: a torch file of (49, 512) pool5 regions per image id, opened
memory-mapped, every feature used checked, and the ids without one counted (their tweets get the zero feature).

Two layouts are read. save_vgg_feature.py writes the stacked one (save_features): the ids in order and one
(N, 49, 512) tensor, which opens in one read. The published file and earlier extractions map each image id to its
own tensor; torch's weights-only unpickler takes about 2 s over the 8,257 tensors of Twitter-2015.
"""
import collections
import logging
from dataclasses import dataclass

import torch

import utils
from data_loader import DataError

logger = logging.getLogger(__name__)

NUM_REGIONS, REGION_DIM = 49, 512  # VGG16 pool5 for a 224 x 224 image: 7 x 7 regions of 512 channels
PROVENANCE_KEY = "__provenance__"  # reserved key of a feature file: how save_vgg_feature.py made it
IMAGE_IDS_KEY, REGIONS_KEY = "__image_ids__", "__regions__"  # the stacked layout: ids, and their (N, 49, 512) tensor
MISSING_FEATURES_WARN = 0.1  # a share of image ids without a feature above this is a loud warning


@dataclass
class FeatureTable:
    """The image features of a run, one (49, 512) tensor per image, and row 0 the zero feature given to tweets
    whose image has none. The tensors are views of the memory-mapped feature file (`torch.load(mmap=True)`):
    nothing is copied at load, the OS page cache holds the file's pages (the kernel can reclaim them at any time,
    since they are clean file pages, not process memory), and a batch gathers copies of its rows as float32."""
    regions: list             # row -> (49, 512) tensor, a view of the mapped file: read it, never write it
    row_of: dict              # image id (str) -> row
    missing_ids: list         # ids asked for and not in the file
    provenance: dict = None   # how save_vgg_feature.py made the file, or None when the file has no record

    def rows(self, img_ids):
        return [self.row_of.get(img_id, 0) for img_id in img_ids]

    def gather(self, rows):
        return torch.stack([self.regions[row] for row in rows]).float()  # (B, 49, 512), a new tensor


# The sum of finite values cannot overflow in these wider types (25,088 values of at most 65504, or 3.4e38), and a
# NaN or an infinity makes it NaN or infinite: a finite sum means finite values. ~6x faster than isfinite().all()
# on float16 (8,257 features: 0.4 s instead of 2.3 s).
SUM_DTYPE = {torch.float16: torch.float32, torch.float32: torch.float64, torch.bfloat16: torch.float64}


def all_finite(value):
    """Whether every value of a float tensor is finite."""
    if value.dtype not in SUM_DTYPE:
        return bool(torch.isfinite(value).all())
    return bool(torch.isfinite(value.sum(dtype=SUM_DTYPE[value.dtype])))


def _as_regions(path, img_id, value):
    """Check one feature and return it as a (49, 512) view, regions in row-major order of the 7 x 7 grid."""
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: the feature of image id {img_id!r} is a {type(value).__name__}, not a tensor. "
                        f"Re-extract the features with save_vgg_feature.py.")
    if value.layout != torch.strided:
        raise DataError(f"{path}: the feature of image id {img_id!r} is a {value.layout} tensor; expected a dense "
                        f"(49, 512) tensor. Save it with .to_dense(), or re-extract it with save_vgg_feature.py.")
    if value.dtype not in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        raise DataError(f"{path}: the feature of image id {img_id!r} has dtype {value.dtype}; expected float16 or "
                        f"float32. Re-extract it with save_vgg_feature.py.")
    if tuple(value.shape) == (REGION_DIM, 7, 7):
        value = value.reshape(REGION_DIM, NUM_REGIONS).t()  # (49, 512), a view: region r is grid cell (r // 7, r % 7)
    elif tuple(value.shape) != (NUM_REGIONS, REGION_DIM):
        raise DataError(f"{path}: the feature of image id {img_id!r} has shape {tuple(value.shape)}; expected "
                        f"(49, 512) or (512, 7, 7) (VGG16 pool5). Re-extract it with save_vgg_feature.py.")
    if not all_finite(value):
        raise DataError(f"{path}: the feature of image id {img_id!r} contains NaN or inf values. Re-extract it with "
                        f"save_vgg_feature.py.")
    return value


def _stored_by_id(path, stored):
    """image id (str) -> its stored tensor (not yet checked), for either layout; an id stored twice is an error."""
    if REGIONS_KEY in stored:
        return _stacked_by_id(path, stored)
    by_id, key_of = {}, {}
    for key, value in stored.items():
        if key == PROVENANCE_KEY:
            continue
        img_id = str(key)
        if img_id in by_id:
            raise DataError(f"{path}: image id {img_id!r} is in the file twice, as {key_of[img_id]!r} and as {key!r}. "
                            f"Keep one of them (re-extract with save_vgg_feature.py).")
        by_id[img_id], key_of[img_id] = value, key
    return by_id


def _stacked_by_id(path, stored):
    """The stacked layout: IMAGE_IDS_KEY, a list of N distinct string ids, and REGIONS_KEY, their (N, ...) tensor."""
    ids, regions = stored.get(IMAGE_IDS_KEY), stored[REGIONS_KEY]
    redo = "Re-extract the features with save_vgg_feature.py."
    if not isinstance(ids, list) or not all(isinstance(img_id, str) for img_id in ids):
        raise DataError(f"{path}: has {REGIONS_KEY!r} but its {IMAGE_IDS_KEY!r} is not a list of image ids (strings). "
                        f"{redo}")
    if not isinstance(regions, torch.Tensor) or regions.dim() < 1 or regions.size(0) != len(ids):
        shape = tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions).__name__
        raise DataError(f"{path}: {REGIONS_KEY!r} is {shape}; expected one (49, 512) feature per image id, "
                        f"({len(ids)}, 49, 512). {redo}")
    by_id = dict(zip(ids, regions.unbind(0)))
    if len(by_id) != len(ids):
        twice = next(img_id for img_id, count in collections.Counter(ids).items() if count > 1)
        raise DataError(f"{path}: image id {twice!r} is in the file twice. {redo}")
    return by_id


def save_features(features, path, provenance, flag=None):
    """Write `features` (image id -> (49, 512) tensor) as a feature file of the stacked layout, with its provenance
    record (how it was made; None for none). `flag` names the option that chose `path`, for error messages."""
    ids = [str(img_id) for img_id in features]
    regions = (torch.stack(list(features.values())) if features
               else torch.zeros(0, NUM_REGIONS, REGION_DIM))                  # (N, 49, 512)
    utils.atomic_torch_save({IMAGE_IDS_KEY: ids, REGIONS_KEY: regions, PROVENANCE_KEY: provenance}, path, flag)


def open_feature_file(path):
    """The object a feature file holds, its tensors memory-mapped (not read) where the format allows."""
    problem = utils.not_a_file(path)
    if problem:
        kind = ("image-feature file not found" if problem == "does not exist"
                else f"{problem}, not an image-feature file")
        raise DataError(f"{path}: {kind}. "
                        f"Extract it with save_vgg_feature.py, pass --img_feature_file, or train text-only with "
                        f"--no_img.")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy torch format: not mappable
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean the same to a user
        raise DataError(f"{path}: not a readable torch file ({type(exc).__name__}: {str(exc)[:200]}). Re-extract it "
                        f"with save_vgg_feature.py or download it again.") from None


def read_features(path):
    """A feature file of either layout as (image id (str) -> its stored tensor, not checked yet; the provenance
    record, or None when the file has none)."""
    stored = open_feature_file(path)
    if not isinstance(stored, dict):
        raise DataError(f"{path}: holds a {type(stored).__name__}; expected a dict (image id -> (49, 512) tensor, or "
                        f"the stacked layout of save_vgg_feature.py). Re-extract the features with save_vgg_feature.py.")
    provenance = stored.get(PROVENANCE_KEY)
    return _stored_by_id(path, stored), provenance if isinstance(provenance, dict) else None


def percent(part, whole):
    """part / whole as a percentage with one decimal, never rounded to 0.0% or 100.0% unless it is exactly that."""
    value = 100 * part / whole
    if 0 < part < whole:
        value = min(max(value, 0.1), 99.9)
    return f"{value:.1f}%"


def load_image_features(path, img_ids, require_some=True):
    """Open the features of `img_ids` in a torch file of (49, 512) or (512, 7, 7) tensors, float16 or float32: the
    stacked layout save_features writes, or a dict mapping each image id to its tensor (keys ints or strings,
    matched as strings). The reserved key `__provenance__` says how the file was made. Every feature used is
    checked (shape, dtype, finite values). Ids with no feature get the zero row and are counted; when no id at all
    has a feature, the file is not this data's and that is an error (unless `require_some` is False: new tweets to
    tag may all come without an image)."""
    by_id, provenance = read_features(path)
    wanted = list(dict.fromkeys(img_ids))  # unique, first-seen order
    present = [img_id for img_id in wanted if img_id in by_id]
    missing = [img_id for img_id in wanted if img_id not in by_id]
    if require_some and wanted and not present:
        sample = ", ".join(repr(key) for key in list(by_id)[:3]) or "none"
        raise DataError(f"{path}: none of the {len(wanted)} image ids of the data has a feature in this file (its "
                        f"{len(by_id)} keys begin {sample}; the data's ids begin "
                        f"{', '.join(repr(i) for i in wanted[:3])}). Point --img_feature_file at the features of "
                        f"this data, extract them with save_vgg_feature.py, or train text-only with --no_img.")

    regions = [torch.zeros(NUM_REGIONS, REGION_DIM)]
    regions += [_as_regions(path, img_id, by_id[img_id]) for img_id in present]
    row_of = {img_id: row for row, img_id in enumerate(present, start=1)}
    if missing:
        share = percent(len(missing), len(wanted))
        large = (f". THAT IS {share} OF THE IMAGES: is this the feature file of this data?"
                 if len(missing) > MISSING_FEATURES_WARN * len(wanted) else "")
        logger.warning("%s: %d of %d image ids (%s) have no feature; their tweets get a zero feature and stay in "
                       "the data%s%s", path, len(missing), len(wanted), share, large,
                       "" if logger.isEnabledFor(logging.DEBUG) else " (--verbose lists them)")
        logger.debug("Image ids without a feature: %s", " ".join(missing))
    return FeatureTable(regions, row_of, missing, provenance)


def synthetic_features(img_ids, seed=0):
    """Full-size (49, 512) non-negative float32 features (like ReLU outputs) for every id: a stand-in for VGG16 that
    carries nothing of the images (save_vgg_feature.py --synthetic, the benchmark)."""
    generator = torch.Generator().manual_seed(seed)
    return {img_id: torch.relu(torch.randn(NUM_REGIONS, REGION_DIM, generator=generator)) for img_id in img_ids}
