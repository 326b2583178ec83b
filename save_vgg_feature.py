"""Extract VGG16 pool5 features (49 regions x 512) for every image of a data set (--dataset).

    python save_vgg_feature.py                                                # writes data/twitter2015/img_vgg_features.pt
    python save_vgg_feature.py --dataset twitter2017                          # images from the UMT archive when missing
    python save_vgg_feature.py --vgg_weights vgg16-397923af.pth --dtype float16
    python save_vgg_feature.py --preprocess seed                              # re-make the seed's published file
    python save_vgg_feature.py --preprocess authors --vgg_weights vgg16_weights_th_dim_ordering_th_kernels_notop.h5

How the pixels are prepared (--preprocess), which weights go with which mode, and what the provenance record holds:
vgg.py, and docs/usage.md ("Extracting image features").
"""
import argparse
import collections
import errno
import logging
import os
import shutil
import signal
import sys

import torch

import downloads
import utils
import vgg
from data_loader import DataError, dataset_file, read_tweets
from image_features import NUM_REGIONS, REGION_DIM, save_features, synthetic_features

logger = logging.getLogger(__name__)

# Each image of a batch holds tens of MB of activations in VGG16 (conv1's output alone is 64 x 224 x 224 float32,
# 12.8 MB; about 40 MB measured): 1024 images is ~40 GB, more than most GPUs hold, and a GPU is busy well before
# (64-256). A larger batch can only run out of memory, after the images before it were decoded.
MAX_BATCH_SIZE = 1024
# A crawl of tweet images loses a few percent (deleted, rate-limited, truncated); more than half failing is a wrong
# --img_dir, images named otherwise than <id>.jpg, or a broken download, and a feature file of mostly zero features
# would train a model that looks multimodal and is not: the run fails instead (exit 2), writing the report only.
MAX_FAILED_SHARE = 0.5
PER_IMAGE_OVERHEAD_BYTES = 1024  # what the file adds per image besides its values (its id), generously


def image_ids(dataset, data_dir, files, offline=False):
    """The image ids of `files` in `data_dir`, in order, each once; a missing split file of `dataset` is first
    downloaded, as main.py does."""
    ids = []
    for name in files:
        tweets, _ = read_tweets(dataset_file(dataset, data_dir, name, offline))
        ids += [tweet.img_id for tweet in tweets]
    return list(dict.fromkeys(ids))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--dataset", default="twitter2015", help=f"which data set ({', '.join(downloads.DATASETS)}, or "
                   "the name of a local one in the IMGID format): sets the defaults of --data_dir, --img_dir and "
                   "--files; its images are downloaded (the UMT archive) when the image folder is missing")
    p.add_argument("--data_dir", default=None, help="folder with the data files (default: ./data/<dataset>)")
    p.add_argument("--img_dir", default=None, help="image folder inside --data_dir, images named <id>.jpg (default: "
                   + ", ".join(f"{d.img_dir} for {name}" for name, d in downloads.DATASETS.items()) + ")")
    p.add_argument("--files", default=None, help="comma-separated data files whose image ids to extract (default: "
                   "the data set's three splits)")
    p.add_argument("--output", default=None, help="output file (default: <data_dir>/img_vgg_features.pt)")
    p.add_argument("--report", default=None, help="list of failed images (default: <output>.failures.tsv)")
    p.add_argument("--vgg_weights", default=None,
                   help=f"weights file: a torchvision checkpoint ({vgg.TORCHVISION_WEIGHTS}, the default for "
                        f"torchvision and seed) or Keras' {vgg.KERAS_TH_WEIGHTS} (needed by caffe and authors)")
    p.add_argument("--preprocess", choices=vgg.MODES, default="torchvision",
                   help="torchvision (default): RGB, /255, ImageNet mean/std, for torchvision's weights; caffe: BGR, "
                        "0-255, Caffe means, for Caffe-converted weights; seed: REPRODUCES A BUG, the seed's "
                        "extractor (uint8 wraparound, Caffe means on RGB, torchvision's weights); authors: "
                        "REPRODUCES A BUG, the authors' OpenCV extractor (uint8 wraparound, Caffe weights)")
    p.add_argument("--force", action="store_true", help="run even when --preprocess and the weights do not match")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored precision")
    p.add_argument("--batch_size", type=utils.int_at_least(1, MAX_BATCH_SIZE), default=32,
                   help=f"images per forward pass (at most {MAX_BATCH_SIZE}: each takes about 40 MB)")
    p.add_argument("--workers", type=utils.int_at_least(0), default=2, help="image-decoding worker processes")
    p.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    p.add_argument("--offline", action="store_true", help="never download (the data set's text files, the VGG16 "
                   "weights, the image archive)")
    p.add_argument("--synthetic", action="store_true", help="instead of VGG16 on the images: a random stand-in "
                   "feature (non-negative noise, seed 0) for every image id of --files, no image or weights needed. "
                   "To try the image model offline; the features carry nothing of the images, and the provenance "
                   "record says so")
    p.add_argument("--random_weights", metavar="PATH", default=None, help="write a VGG16 checkpoint of random weights "
                   "(seed 0, torchvision's format) to PATH and stop: a stand-in for the ImageNet weights, to try "
                   "extraction and tagging raw tweets with images offline (--vgg_weights PATH)")
    return p


def parse_args(argv=None):
    """The arguments, with the defaults of --dataset filled in where a flag was not given."""
    args = build_parser().parse_args(argv)
    dataset = downloads.dataset_named(args.dataset)
    args.data_dir = args.data_dir or dataset.data_dir
    args.img_dir = args.img_dir or dataset.img_dir
    args.files = args.files or ",".join(dataset.split_files)
    return args


def check_outputs(output, report):
    """Refuse, before anything is read or extracted, an output or report that could not be written at the end."""
    if os.path.abspath(output) == os.path.abspath(report):
        raise DataError(f"--output and --report name the same file ({output}): give them different names.")
    utils.check_writable(output, "--output")
    utils.check_writable(report, "--report")


def check_free_space(output, num_images, dtype):
    """Refuse when the output's disk cannot hold the features of `num_images` (all of them: an earlier file stays
    until the new one replaces it)."""
    needed = num_images * (NUM_REGIONS * REGION_DIM * dtype.itemsize + PER_IMAGE_OVERHEAD_BYTES)
    folder = os.path.dirname(os.path.abspath(output))
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise utils.OutputError(errno.ENOSPC, f"{output}: needs about {needed / 1e6:.1f} MB for the features of "
                                              f"{num_images} images ({str(dtype).replace('torch.', '')}), but the disk "
                                              f"of {folder} has {free / 1e6:.1f} MB free. Free some space, or write "
                                              f"elsewhere (another --output).")


def load_network(args):
    """VGG16 with the weights of --vgg_weights (torchvision's, cached or downloaded, by default), checked against
    --preprocess; and what the provenance record says of them."""
    weights_path = vgg.resolve_weights(args.vgg_weights, args.offline, args.preprocess)
    weights = vgg.weights_info(weights_path)
    logger.info("VGG16 weights %s: sha256 %s (%s)", weights_path, weights["sha256"], weights["format"])
    forced = vgg.check_pairing(args.preprocess, weights_path, weights, args.force)
    model = vgg.load_weights(vgg.VGG16Features(), weights_path)
    return model, {"weights_path": weights_path, "weights": weights, "forced": forced}


def folder_listing(folder, count=3):
    """'<folder> holds N files: a, b, c, ...' (the first names in order), or why it cannot be listed."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        return f"{folder} cannot be listed ({exc.strerror})"
    listed = f": {', '.join(names[:count])}{', ...' if len(names) > count else ''}" if names else ""
    return f"{folder} holds {len(names)} file{'' if len(names) == 1 else 's'}{listed}"


def too_many_failures(failures, num_images, img_dir, report, mode):
    """None when enough images were extracted; else the error saying what failed and the likely cause."""
    extracted = num_images - len(failures)
    if extracted > 0 and len(failures) <= MAX_FAILED_SHARE * num_images:
        return None
    kinds = collections.Counter(reason.split(":")[0] for _, reason in failures)
    extensions = vgg.MODE_EXTENSIONS[mode]
    names = f"<id>{extensions[0]}" + (f" (or {', '.join(extensions[1:])})" if len(extensions) > 1 else "")
    first = "".join(f"\n  {img_id}: {reason}" for img_id, reason in failures[:3])
    return DataError(
        f"only {extracted} of {num_images} images could be extracted from {img_dir} ({len(failures)} failed: "
        f"{', '.join(f'{n} {kind}' for kind, n in kinds.most_common())}). More than half failing is not a few bad "
        f"images but the wrong image folder or a broken download: check --img_dir (and --data_dir); each image "
        f"must be {names} in it, and {folder_listing(img_dir)}. The first failures:{first}\n"
        f"All are listed in {report}. No feature file was written (an earlier one, if any, is kept).")


def extract_and_save(args, output, report):
    """Extract the features of every image id of --files and save them with their provenance record, or stop
    with the report alone when most images failed."""
    device = "cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu"
    dtype = getattr(torch, args.dtype)
    vgg.check_mode_available(args.preprocess)
    ids = image_ids(args.dataset, args.data_dir, [f for f in args.files.split(",") if f], args.offline)
    if not ids:
        raise DataError(f"no image ids to extract: --files {args.files!r} names no data file with tweets.")
    check_free_space(output, len(ids), dtype)
    if args.synthetic:
        return save_synthetic(ids, dtype, output)
    model, network = load_network(args)
    dataset = downloads.dataset_named(args.dataset)
    img_dir = downloads.fetch_images(dataset, args.data_dir, args.offline, args.img_dir)
    logger.info("Extracting %d images from %s on %s (--preprocess %s)", len(ids), img_dir, device, args.preprocess)
    features, failures = vgg.extract(model, img_dir, ids, batch_size=args.batch_size, mode=args.preprocess,
                                     dtype=dtype, device=device, workers=args.workers)
    failed = "".join(f"{img_id}\t{reason}\n" for img_id, reason in failures)
    error = too_many_failures(failures, len(ids), img_dir, report, args.preprocess)
    if error:
        utils.atomic_write_text(report, failed, "--report")
        raise error
    provenance = vgg.provenance_record(mode=args.preprocess, dtype=dtype, image_dir=img_dir, num_images=len(ids),
                                       num_failures=len(failures), device=device, **network)
    save_features(features, output, provenance, "--output")
    utils.atomic_write_text(report, failed, "--report")
    print(f"Wrote {len(features)} features to {output}; {len(failures)} images failed (listed in {report}).")
    return 0


def save_synthetic(ids, dtype, output):
    """--synthetic: stand-in features for `ids`, with a provenance record that says what they are."""
    features = {img_id: regions.to(dtype) for img_id, regions in synthetic_features(ids).items()}
    provenance = {"mode": "synthetic", "note": "random non-negative noise (save_vgg_feature.py --synthetic, seed 0): "
                  "no image was read", "dtype": str(dtype).replace("torch.", ""), "num_images": len(ids),
                  "num_features": len(ids), "num_failures": 0}
    save_features(features, output, provenance, "--output")
    print(f"Wrote {len(ids)} synthetic features (random, no image read) to {output}.")
    return 0


def save_random_weights(path):
    """--random_weights: a VGG16 checkpoint of random weights (seed 0) in torchvision's format."""
    torch.manual_seed(0)
    utils.atomic_torch_save(vgg.VGG16Features().state_dict(), path, "--random_weights")
    print(f"Wrote random VGG16 weights to {path} (use them with --vgg_weights {path}; features made with them carry "
          f"no ImageNet knowledge).")
    return 0


def run(args):
    """Check the output and report locations, then extract while holding the output's lock."""
    output = args.output or os.path.join(args.data_dir, "img_vgg_features.pt")
    report = args.report or output + ".failures.tsv"
    check_outputs(output, report)
    with utils.file_lock(output, "--output"):
        for stale in utils.remove_stale_temporaries(output):
            logger.warning("removed %s, left by an interrupted run", stale)
        return extract_and_save(args, output, report)


def main(argv=None):
    args = parse_args(argv)
    utils.init_logger()
    previous = signal.signal(signal.SIGTERM, utils.raise_terminated)  # stop as on Ctrl-C, cleaning up after itself
    try:
        return save_random_weights(args.random_weights) if args.random_weights else run(args)
    except (DataError, downloads.DownloadError, utils.OutputError, utils.FolderInUse) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM: the temporaries and the lock file are removed by now
        name = getattr(exc, "signal_name", "SIGINT")
        print(f"interrupted ({name})", file=sys.stderr)
        return utils.interrupted_code(name)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    utils.run_script(main)
