"""Extract VGG16 pool5 features (49 regions x 512) for every image of Twitter-2015.

    python save_vgg_feature.py --data_dir ./data --img_dir ner_img            # writes data/img_vgg_features.pt
    python save_vgg_feature.py --vgg_weights vgg16-397923af.pth --dtype float16

Each image `<data_dir>/<img_dir>/<id>.jpg` (or .png/.jpeg) is resized to 224 x 224 and passed through VGG16's
convolutional part; the last pooling layer gives 512 x 7 x 7, saved as a (49, 512) tensor, regions in row-major
order of the 7 x 7 grid. The output maps image id (str) -> tensor. Images that cannot be read are listed with the
reason in a report file and get no feature (main.py then gives their tweets a zero feature and counts them).

The network is defined here (no torchvision import) with torchvision's parameter names, so torchvision's ImageNet
checkpoint `vgg16-397923af.pth` loads unchanged.
"""
import argparse
import logging
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

import utils
from data_loader import DataError, read_tweets

logger = logging.getLogger(__name__)

IMAGE_SIZE = 224
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg")
VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB, on 0-1 values
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Keras "caffe" mode: BGR, 0-255, mean subtracted


class VGG16Features(nn.Module):
    """VGG16's convolutional part up to pool5, laid out as torchvision's `vgg16().features` (same indices)."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for width in VGG16_LAYERS:
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)

    def forward(self, images):
        pooled = self.features(images)                           # (B, 512, 7, 7) for 224 x 224 images
        return pooled.flatten(2).transpose(1, 2)                  # (B, 49, 512) region r = grid cell (r // 7, r % 7)


def load_vgg16_weights(model, path):
    """Load a torchvision VGG16 checkpoint (state dict with `features.N.*` and `classifier.N.*`) into `model`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a bad file raises many types
        raise DataError(f"{path}: not a readable VGG16 checkpoint ({type(exc).__name__}: {str(exc)[:200]}).") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    features = {k: v for k, v in state.items() if k.startswith("features.")} if isinstance(state, dict) else {}
    expected = set(model.state_dict())
    if set(features) != expected:
        raise DataError(f"{path}: not a torchvision VGG16 checkpoint: missing {sorted(expected - set(features))[:4]}, "
                        f"unexpected {sorted(set(features) - expected)[:4]}.")
    model.load_state_dict(features)
    return model


def default_weights_path():
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(utils.VGG16_WEIGHTS_URL))


def resolve_weights(path, offline):
    """The local checkpoint to use: --vgg_weights, else torchvision's cache, else a download into that cache."""
    if path:
        if not os.path.isfile(path):
            raise DataError(f"{path}: --vgg_weights file not found.")
        return path
    cached = default_weights_path()
    if os.path.isfile(cached):
        return cached
    hint = (f"pass a local copy with --vgg_weights PATH (torchvision's vgg16-397923af.pth from "
            f"{utils.VGG16_WEIGHTS_URL}), or run once with network access so it is cached at {cached}")
    if offline:
        raise utils.DownloadError(f"No VGG16 weights: {cached} is missing and --offline forbids downloading them.\n"
                                  f"  To provide them: {hint}")
    return utils.download(utils.VGG16_WEIGHTS_URL, cached, check=utils.check_torch_zip, avoid_hint=hint)


# ----------------------------------------------------------------------------------------------------------------
# Images as they come from Twitter

def find_image(img_dir, img_id):
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(img_dir, img_id + ext)
        if os.path.isfile(path):
            return path
    return None


def to_rgb(image):
    """Any PIL image (L, P, RGBA, CMYK, 16-bit, EXIF-rotated, ...) as an 8-bit RGB image, upright."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit grey: scale to 0-255
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode != "F" and values.max() > 255 else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent parts become white
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def preprocess(image, mode):
    """224 x 224 RGB PIL image -> (3, 224, 224) float tensor for the chosen weights."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)  # (3, H, W) RGB, 0-255
    if mode == "caffe":
        pixels = pixels.flip(0)  # RGB -> BGR
        return pixels - torch.tensor(CAFFE_MEAN_BGR)[:, None, None]
    pixels = pixels / 255.0
    return (pixels - torch.tensor(TORCHVISION_MEAN)[:, None, None]) / torch.tensor(TORCHVISION_STD)[:, None, None]


def load_image(img_dir, img_id, mode):
    """(tensor, None) for a readable image, (None, reason) otherwise."""
    path = find_image(img_dir, img_id)
    if path is None:
        return None, f"missing: no {img_id}{{{','.join(IMAGE_EXTENSIONS)}}} in {img_dir}"
    try:
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return None, f"unreadable: {os.path.basename(path)}: {type(exc).__name__}: {exc}"
    return preprocess(rgb, mode), None


class ImageSet(torch.utils.data.Dataset):
    def __init__(self, img_dir, img_ids, mode):
        self.img_dir, self.img_ids, self.mode = img_dir, img_ids, mode

    def __len__(self):
        return len(self.img_ids)

    def __getitem__(self, i):
        pixels, reason = load_image(self.img_dir, self.img_ids[i], self.mode)
        return self.img_ids[i], pixels, reason


def as_list(items):
    """DataLoader collate: keep the (id, pixels or None, reason or None) items as they are."""
    return items


# ----------------------------------------------------------------------------------------------------------------

def extract(model, img_dir, img_ids, *, batch_size=32, mode="torchvision", dtype=torch.float32, device="cpu",
            workers=0, progress=True):
    """Features {id: (49, 512) tensor of `dtype`} of the readable images, and failures [(id, reason)]."""
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(ImageSet(img_dir, img_ids, mode), batch_size=batch_size,
                                         num_workers=workers, collate_fn=as_list)
    features, failures = {}, []
    with torch.inference_mode():
        for items in tqdm(loader, desc="Extracting", disable=not progress):
            good = [(img_id, pixels) for img_id, pixels, _ in items if pixels is not None]
            failures += [(img_id, reason) for img_id, pixels, reason in items if pixels is None]
            if not good:
                continue
            images = torch.stack([pixels for _, pixels in good]).to(device)  # (B, 3, 224, 224)
            for (img_id, _), regions in zip(good, model(images).to("cpu", dtype)):
                features[img_id] = regions.clone()  # (49, 512), its own storage
    return features, failures


def image_ids(data_dir, files):
    ids = []
    for name in files:
        tweets, _ = read_tweets(os.path.join(data_dir, name))
        ids += [tweet.img_id for tweet in tweets]
    return list(dict.fromkeys(ids))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="./data", help="folder with the train/dev/test files")
    p.add_argument("--img_dir", default="ner_img", help="image folder inside --data_dir, images named <id>.jpg")
    p.add_argument("--files", default="train,dev,test", help="data files whose image ids to extract")
    p.add_argument("--output", default=None, help="output file (default: <data_dir>/img_vgg_features.pt)")
    p.add_argument("--report", default=None, help="list of failed images (default: <output>.failures.tsv)")
    p.add_argument("--vgg_weights", default=None, help="local torchvision VGG16 checkpoint (vgg16-397923af.pth)")
    p.add_argument("--preprocess", choices=["torchvision", "caffe"], default="torchvision",
                   help="torchvision: RGB, /255, ImageNet mean/std (for torchvision's weights); caffe: BGR, 0-255, "
                        "mean subtracted (the authors' Keras pipeline)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored precision")
    p.add_argument("--batch_size", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    p.add_argument("--offline", action="store_true", help="never download the VGG16 weights")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    utils.init_logger()
    output = args.output or os.path.join(args.data_dir, "img_vgg_features.pt")
    report = args.report or output + ".failures.tsv"
    device = "cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu"
    try:
        ids = image_ids(args.data_dir, [f for f in args.files.split(",") if f])
        model = load_vgg16_weights(VGG16Features(), resolve_weights(args.vgg_weights, args.offline))
    except (DataError, utils.DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    img_dir = os.path.join(args.data_dir, args.img_dir)
    logger.info("Extracting %d images from %s on %s", len(ids), img_dir, device)
    features, failures = extract(model, img_dir, ids, batch_size=args.batch_size, mode=args.preprocess,
                                 dtype=getattr(torch, args.dtype), device=device, workers=args.workers)
    utils.atomic_torch_save(features, output)
    utils.atomic_write_text(report, "".join(f"{img_id}\t{reason}\n" for img_id, reason in failures))
    print(f"Wrote {len(features)} features to {output}; {len(failures)} images failed (listed in {report}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
