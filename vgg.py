"""VGG16 pool5 features (49 regions x 512) of images: the network, its weights, the four ways of preparing pixels,
and the provenance record that says how a feature file was made.

Each image `<data_dir>/<img_dir>/<id>.jpg` (or .png/.jpeg) is resized to 224 x 224 and passed through VGG16's
convolutional part; the last pooling layer gives 512 x 7 x 7, saved as a (49, 512) tensor, regions in row-major
order of the 7 x 7 grid. The output maps image id (str) -> tensor, plus one reserved key "__provenance__" whose
value is a dict of plain str/int/float saying how the file was made (mode, weights file and sha256, dtype,
versions, image folder, counts, date). Images that cannot be read are listed with the reason in a report file and
get no feature (main.py then gives their tweets a zero feature and counts them).

--preprocess: how pixels are prepared. Each mode goes with one family of weights.
  torchvision  (default, correct) Pillow, upright 8-bit RGB, bilinear resize, /255, ImageNet mean/std.
               For torchvision's ImageNet checkpoint vgg16-397923af.pth.
  caffe        (correct) as torchvision, then BGR order, 0-255, Caffe means (103.939, 116.779, 123.68) subtracted
               in floating point. For Caffe-converted weights (Keras' th-kernels .h5 file, below).
  seed         REPRODUCES A BUG: the seed PyTorch implementation's extractor (monologg/NER-Multimodal-pytorch,
               save_vgg_feature.py, last version), the one its README gives for the img_vgg_features.pt that
               main.py downloads. Pillow, the image as stored (no EXIF rotation, no mode conversion) resized to
               224 x 224 with Pillow 7's default bicubic filter; grey (and palette indices) copied to 3 channels,
               a 4th channel dropped; then the Caffe *BGR* means subtracted from R, G, B in turn *in place on the
               uint8 array*: truncated toward zero and wrapped modulo 256 (10 - 103.939 -> 163); no /255; fed in
               RGB order to torchvision's weights. Only <id>.jpg files are read.
  authors      REPRODUCES A BUG: the authors' extractor (jinlanfu/NERmultimodal, vgg_image_feature.py), which made
               the features behind the paper's 70.69. OpenCV's cv2.imread (BGR, uint8) and cv2.resize to 224 x 224
               with its default bilinear filter, the Caffe means subtracted from B, G, R in place on the uint8
               array (the same wraparound), fed in BGR order to Caffe-converted weights. Only <id>.jpg files are
               read. Needs opencv-python-headless.

Weights (--vgg_weights):
  - torchvision's checkpoint format (a state dict with features.N.weight/bias, classifier.* ignored), e.g.
    torchvision's vgg16-397923af.pth (downloaded and cached when not given, for torchvision/seed modes);
  - Keras' Caffe-converted VGG16 in Theano layout, vgg16_weights_th_dim_ordering_th_kernels_notop.h5 (or the same
    file with the top), from github.com/fchollet/deep-learning-models/releases/download/v0.1/: the file the
    authors loaded. Read with h5py; each 3x3 kernel is rotated by 180 degrees, because Theano applies its kernels
    as true convolutions and PyTorch computes cross-correlation.
A mode and weights that cannot go together (caffe/authors with a torch checkpoint, torchvision/seed with the .h5
file) are refused; --force runs anyway (for a torch conversion of Caffe weights, say) and is recorded.

The network is defined here (no torchvision import) with torchvision's parameter names, so torchvision's
checkpoint loads unchanged. `extractor_from_provenance` rebuilds the pipeline of an existing feature file to
extract features of new images the same way.
"""
import datetime
import logging
import os

import numpy as np
import PIL
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

import downloads
import utils
from data_loader import DataError
from images import IMAGE_EXTENSIONS, ImageError, find_image, open_image, read_image

logger = logging.getLogger(__name__)

IMAGE_SIZE = 224
VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # conv layers in vgg16().features
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB, on 0-1 values
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Caffe's VGG16 means of B, G, R on 0-255 values
SOURCES_MEAN_PIXEL = CAFFE_MEAN_BGR  # both sources' `mean_pixel`, subtracted from array channels 0, 1, 2 in turn

MODES = ("torchvision", "caffe", "seed", "authors")
WEIGHTS_FAMILY = {"torchvision": "torchvision", "seed": "torchvision", "caffe": "caffe", "authors": "caffe"}
MODE_EXTENSIONS = {"torchvision": IMAGE_EXTENSIONS, "caffe": IMAGE_EXTENSIONS, "seed": (".jpg",), "authors": (".jpg",)}

TORCHVISION_SHA256_PREFIX = downloads.VGG16_WEIGHTS_SHA256_PREFIX  # torchvision names checkpoints after their sha256
TORCHVISION_WEIGHTS = os.path.basename(downloads.VGG16_WEIGHTS_URL)
KERAS_TH_WEIGHTS = os.path.basename(downloads.KERAS_VGG16_TH_WEIGHTS_URL)
KERAS_TH_WEIGHTS_URL = downloads.KERAS_VGG16_TH_WEIGHTS_URL
KERAS_CONV_LAYERS = [f"block{block}_conv{i}" for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                     for i in range(1, convs + 1)]  # Keras' names of the 13 conv layers, in order
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

PROVENANCE_NEEDED = ("mode", "weights_file", "weights_sha256", "dtype")


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


# ----------------------------------------------------------------------------------------------------------------
# Weights: torchvision's checkpoint format, or Keras' Caffe-converted .h5 in Theano layout

def is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


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


def import_h5py():
    try:
        import h5py
    except ImportError:
        raise DataError("Reading Keras .h5 weights needs h5py: pip install h5py") from None
    return h5py


def as_names(values):
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def load_keras_th_weights(model, path):
    """Load Keras' VGG16 in Theano layout (vgg16_weights_th_dim_ordering_th_kernels[_notop].h5) into `model`.

    Layer `blockB_convI` -> features.N (N from TORCHVISION_CONV_INDICES, in order); its kernel (out, in, 3, 3) is
    rotated by 180 degrees: Theano's conv2d flips the kernel (a true convolution), PyTorch's does not.
    """
    h5py = import_h5py()
    hint = f"expected Keras' {KERAS_TH_WEIGHTS} ({KERAS_TH_WEIGHTS_URL})"
    if "tf_kernels" in os.path.basename(path):
        raise DataError(f"{path}: a file of TensorFlow-convention kernels; {hint}.")
    state = {}
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable .h5 file ({exc}); {hint}.") from None
    with f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        if group.attrs.get("backend") not in (None, b"theano", "theano"):
            raise DataError(f"{path}: saved by Keras' {as_names([group.attrs['backend']])[0]} backend; {hint}.")
        layer_names = as_names(group.attrs.get("layer_names", []))
        missing = [name for name in KERAS_CONV_LAYERS if name not in layer_names]
        if missing:
            raise DataError(f"{path}: no VGG16 conv layers {missing[:3]} (layers: {layer_names[:6]}); {hint}.")
        for index, name in zip(TORCHVISION_CONV_INDICES, KERAS_CONV_LAYERS):
            conv = model.features[index]
            arrays = [np.asarray(group[name][w]) for w in as_names(group[name].attrs["weight_names"])]
            kernels = [a for a in arrays if a.ndim == 4]
            biases = [a for a in arrays if a.ndim == 1]
            if len(kernels) != 1 or len(biases) != 1:
                raise DataError(f"{path}: layer {name} holds {[a.shape for a in arrays]}, not one kernel and one bias.")
            kernel, bias = kernels[0], biases[0]
            if kernel.shape != tuple(conv.weight.shape) or bias.shape != tuple(conv.bias.shape):
                raise DataError(f"{path}: layer {name} has kernel {kernel.shape} and bias {bias.shape}; VGG16 in "
                                f"Theano layout has {tuple(conv.weight.shape)} and {tuple(conv.bias.shape)}; {hint}.")
            flipped = np.ascontiguousarray(kernel[:, :, ::-1, ::-1])  # (out, in, 3, 3) rotated by 180 degrees
            state[f"features.{index}.weight"] = torch.from_numpy(flipped).float()
            state[f"features.{index}.bias"] = torch.from_numpy(bias).float()
    model.load_state_dict(state)
    return model


def weights_info(path):
    """What a weights file is: {format, family, sha256, description}."""
    sha256 = downloads.sha256_of(path)
    if is_hdf5(path):
        return {"format": "keras_th_h5", "family": "caffe", "sha256": sha256,
                "description": "a Keras .h5 file (Caffe-converted VGG16: BGR 0-255 inputs, Caffe means subtracted)"}
    if sha256.startswith(TORCHVISION_SHA256_PREFIX):
        description = (f"torchvision's ImageNet checkpoint {TORCHVISION_WEIGHTS} (sha256 {sha256[:16]}...; RGB inputs "
                       f"scaled to 0-1 and normalised with ImageNet mean/std)")
    else:
        description = "a torch checkpoint (taken to hold torchvision-convention weights: RGB 0-1 inputs, mean/std)"
    return {"format": "torch", "family": "torchvision", "sha256": sha256, "description": description}


def check_pairing(mode, path, info, force):
    """Refuse weights that do not go with `mode` unless `force`; return whether the pairing was forced."""
    if WEIGHTS_FAMILY[mode] == info["family"]:
        return False
    if WEIGHTS_FAMILY[mode] == "caffe":
        wanted = f"Caffe-converted VGG16 weights: Keras' {KERAS_TH_WEIGHTS} ({KERAS_TH_WEIGHTS_URL})"
        other = "--preprocess torchvision (or seed)"
    else:
        wanted = f"torchvision's {TORCHVISION_WEIGHTS} ({downloads.VGG16_WEIGHTS_URL})"
        other = "--preprocess caffe (or authors)"
    message = (f"{path}: --preprocess {mode} needs {wanted}, but this is {info['description']}: the features would "
               f"not mean what the weights learned. Pass the right file with --vgg_weights, or use {other}, or add "
               f"--force if you know this file holds weights for this preprocessing.")
    if not force:
        raise DataError(message)
    logger.warning("--force: %s", message)
    return True


def load_weights(model, path):
    return load_keras_th_weights(model, path) if is_hdf5(path) else load_vgg16_weights(model, path)


def default_weights_path():
    return os.path.join(torch.hub.get_dir(), "checkpoints", TORCHVISION_WEIGHTS)


def resolve_weights(path, offline, mode="torchvision"):
    """The local weights file to use: --vgg_weights, else (torchvision's weights only) torchvision's cache, else a
    download into that cache."""
    if path:
        problem = utils.not_a_file(path)
        if problem:
            what = "file not found" if problem == "does not exist" else f"{problem}, not a weights file"
            raise DataError(f"{path}: --vgg_weights {what}.")
        return path
    if WEIGHTS_FAMILY[mode] == "caffe":
        raise DataError(f"--preprocess {mode} needs Caffe-converted VGG16 weights: download Keras' {KERAS_TH_WEIGHTS} "
                        f"from {KERAS_TH_WEIGHTS_URL} and pass it with --vgg_weights PATH.")
    cached = default_weights_path()
    if os.path.isfile(cached):
        return cached
    hint = (f"pass a local copy with --vgg_weights PATH (torchvision's {TORCHVISION_WEIGHTS} from "
            f"{downloads.VGG16_WEIGHTS_URL}), or run once with network access so it is cached at {cached}")
    if offline:
        raise downloads.DownloadError(f"No VGG16 weights: {cached} is missing and --offline forbids downloading them.\n"
                                  f"  To provide them: {hint}")
    return downloads.download(downloads.VGG16_WEIGHTS_URL, cached, check=downloads.check_torch_zip, avoid_hint=hint,
                          hash_prefix=TORCHVISION_SHA256_PREFIX)


def import_cv2():
    try:
        import cv2
    except ImportError:
        raise DataError("--preprocess authors decodes images with OpenCV, as the authors did: "
                        "pip install opencv-python-headless") from None
    return cv2


def check_mode_available(mode):
    """Fail early, once, when a mode's optional dependency is missing."""
    if mode not in MODES:
        raise DataError(f"unknown preprocessing mode {mode!r}; one of {', '.join(MODES)}.")
    if mode == "authors":
        import_cv2()


# ----------------------------------------------------------------------------------------------------------------
# Pixels: one function per mode, each path -> (3, 224, 224) float32 tensor, or ImageError

def normalise(rgb, mode):
    """224 x 224 RGB PIL image -> (3, 224, 224) float tensor for torchvision's or Caffe's weights (no bug)."""
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)  # (3, H, W) RGB, 0-255
    if mode == "caffe":
        pixels = pixels.flip(0)  # RGB -> BGR
        return pixels - torch.tensor(CAFFE_MEAN_BGR)[:, None, None]
    pixels = pixels / 255.0
    return (pixels - torch.tensor(TORCHVISION_MEAN)[:, None, None]) / torch.tensor(TORCHVISION_STD)[:, None, None]


def subtract_in_place(pixels, means):
    """The sources' `im[:, :, c] = im[:, :, c] - mean_pixel[c]` for c = 0, 1, 2, as float32, exactly.

    numpy computes the difference in float64 and writes it back into the array's own dtype. For unsigned integers
    (uint8) that is C's float-to-integer conversion: truncation toward zero, keeping the low bits on x86, so
    negative results wrap modulo 256: 10 - 103.939 = -93.939 -> -93 -> 163, and 200 - 103.939 -> 96. Other
    dtypes convert as numpy does (signed integers truncate, floats stay, bool becomes "not zero").
    """
    difference = pixels.astype(np.float64) - np.asarray(means)  # (224, 224, 3)
    if np.issubdtype(pixels.dtype, np.unsignedinteger):
        modulus = int(np.iinfo(pixels.dtype).max) + 1
        return (np.trunc(difference).astype(np.int64) % modulus).astype(np.float32)
    return difference.astype(pixels.dtype).astype(np.float32)


def resize_as_seed(image):
    # The seed calls `im.resize((224, 224))` on the image as opened; Pillow 7.0, which it pins, defaults to bicubic
    # (and itself uses nearest for modes "1" and "P", as Pillow still does).
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)


def seed_pixels(path):
    """REPRODUCES A BUG. monologg/NER-Multimodal-pytorch save_vgg_feature.py, its `__main__` loop, step by step."""
    pixels = np.array(read_image(path, resize_as_seed))  # (224, 224[, C]) in the mode's dtype; no EXIF rotation
    if pixels.shape == (IMAGE_SIZE, IMAGE_SIZE):  # grey (or palette indices, or 16-bit) copied to 3 channels
        pixels = np.concatenate([pixels[:, :, None]] * 3, axis=-1)  # (224, 224, 3)
    pixels = pixels[:, :, :3]  # (224, 224, <=3) RGBA's alpha and CMYK's K dropped: CMY taken as RGB
    if pixels.shape[2] < 3:
        raise ImageError(path, f"a {pixels.shape[2]}-channel image (LA/PA): the seed's extractor stops with an "
                               f"IndexError here (outside its try)")
    wrapped = subtract_in_place(pixels, SOURCES_MEAN_PIXEL)  # (224, 224, 3) BGR means taken from R, G, B
    return torch.from_numpy(wrapped).permute(2, 0, 1)  # (3, 224, 224) RGB order, 0-255 wrapped


def authors_pixels(path):
    """REPRODUCES A BUG. jinlanfu/NERmultimodal vgg_image_feature.py, its `__main__` loop, step by step."""
    cv2 = import_cv2()
    image = cv2.imread(os.fspath(path))  # (H, W, 3) uint8 BGR (grey replicated, alpha dropped), None if unreadable
    if image is None:
        raise ImageError(path, "OpenCV cannot decode it (cv2.imread returned None)")
    image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE))  # (224, 224, 3) default interpolation: INTER_LINEAR
    wrapped = subtract_in_place(image, SOURCES_MEAN_PIXEL)  # (224, 224, 3) B, G, R minus Caffe's B, G, R means
    return torch.from_numpy(wrapped).permute(2, 0, 1)  # (3, 224, 224) BGR order, 0-255 wrapped


def load_pixels(path, mode):
    """(3, 224, 224) float32 input for VGG16 of the image at `path`, prepared as `mode` says; ImageError if unusable."""
    if mode == "seed":
        return seed_pixels(path)
    if mode == "authors":
        return authors_pixels(path)
    rgb = open_image(path).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return normalise(rgb, mode)


class ImageSet(torch.utils.data.Dataset):
    """Items (key, path or None, reason if missing) -> (key, pixels or None, failure reason or None)."""

    def __init__(self, entries, mode):
        self.entries, self.mode = entries, mode

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        key, path, missing = self.entries[i]
        if path is None:
            return key, None, missing
        try:
            return key, load_pixels(path, self.mode), None
        except ImageError as exc:
            return key, None, f"unreadable: {os.path.basename(path)}: {exc.reason}"


def as_list(items):
    """DataLoader collate: keep the (key, pixels or None, reason or None) items as they are."""
    return items


def run_vgg(model, entries, *, mode, batch_size, dtype, device, workers, progress):
    """Features {key: (49, 512) tensor of `dtype`} of the usable images, and failures [(key, reason)] in order."""
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(ImageSet(entries, mode), batch_size=batch_size, num_workers=workers,
                                         collate_fn=as_list)
    features, failures = {}, []
    with torch.inference_mode():
        for items in tqdm(loader, desc="Extracting", disable=None if progress else True):  # None: on a terminal only
            good = [(key, pixels) for key, pixels, _ in items if pixels is not None]
            failures += [(key, reason) for key, pixels, reason in items if pixels is None]
            if not good:
                continue
            images = torch.stack([pixels for _, pixels in good]).to(device)  # (B, 3, 224, 224)
            for (key, _), regions in zip(good, model(images).to("cpu", dtype)):
                features[key] = regions.clone()  # (49, 512), its own storage
    return features, failures


def extract(model, img_dir, img_ids, *, batch_size=32, mode="torchvision", dtype=torch.float32, device="cpu",
            workers=0, progress=True):
    """Features {id: (49, 512) tensor of `dtype`} of the readable images of `img_dir`, and failures [(id, reason)]."""
    extensions = MODE_EXTENSIONS[mode]
    entries = []
    for img_id in img_ids:
        path = find_image(img_dir, img_id, extensions)
        entries.append((img_id, path, f"missing: no {img_id}{{{','.join(extensions)}}} in {img_dir}"))
    return run_vgg(model, entries, mode=mode, batch_size=batch_size, dtype=dtype, device=device, workers=workers,
                   progress=progress)


# ----------------------------------------------------------------------------------------------------------------
# Provenance: how a feature file was made, and the same pipeline rebuilt from it

def provenance_record(*, mode, weights_path, weights, forced, dtype, image_dir, num_images, num_failures, device):
    """The "__provenance__" entry of a feature file: plain str/int/float only (loads with weights_only=True)."""
    return {
        "extractor": "save_vgg_feature.py",
        "mode": mode,
        "weights_file": os.path.basename(weights_path),
        "weights_sha256": weights["sha256"],
        "weights_format": weights["format"],
        "forced": int(forced),
        "dtype": str(dtype).replace("torch.", ""),
        "image_size": IMAGE_SIZE,
        "torch_version": str(torch.__version__),
        "pillow_version": str(PIL.__version__),
        "numpy_version": str(np.__version__),
        "opencv_version": str(import_cv2().__version__) if mode == "authors" else "",
        "device": device,
        "image_dir": os.path.abspath(image_dir),
        "num_images": num_images,
        "num_features": num_images - num_failures,
        "num_failures": num_failures,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def unusable_path(path):
    """Why an image path given by the user cannot be read: missing, or not a regular file (a folder, a FIFO)."""
    problem = utils.not_a_file(path)
    return "missing: no such file" if problem == "does not exist" else f"unreadable image: {problem}, not a file"


class Extractor:
    """VGG16 pool5 features of arbitrary image files, made by one fixed pipeline (mode, weights, dtype)."""

    def __init__(self, model, mode, dtype=torch.float32, device="cpu", batch_size=32, workers=0):
        check_mode_available(mode)
        self.model, self.mode, self.dtype = model.eval().to(device), mode, dtype
        self.device, self.batch_size, self.workers = device, batch_size, workers

    def features(self, paths, progress=False):
        """({path: (49, 512) float32 tensor}, [(path, reason)]) for `paths`; a bad image never stops the others.

        Values are rounded through the pipeline's stored dtype, so they equal what its feature file holds.
        """
        entries = [(path, None if utils.not_a_file(path) else path, unusable_path(path)) for path in paths]
        stored, failures = run_vgg(self.model, entries, mode=self.mode, batch_size=self.batch_size,
                                   dtype=self.dtype, device=self.device, workers=self.workers, progress=progress)
        return {path: regions.float() for path, regions in stored.items()}, failures


def stated_provenance(mode, vgg_weights=None, offline=False):
    """A provenance record for a feature file that carries none, from what the user states: made by `mode` with
    `vgg_weights` (torchvision's checkpoint, cached or downloaded, when None). Marked as stated, not recorded."""
    path = resolve_weights(vgg_weights, offline, mode)
    sha256 = downloads.sha256_of(path)
    if mode == "seed" and not sha256.startswith(TORCHVISION_SHA256_PREFIX):
        logger.warning("%s is not torchvision's %s (sha256 %s...), which the published features were made with: the "
                       "features of your images will not match them unless your feature file was made with this "
                       "file.", path, TORCHVISION_WEIGHTS, sha256[:16])
    return {"mode": mode, "weights_file": os.path.basename(path), "weights_sha256": sha256,
            "dtype": "float32", "stated_by_user": True}, path


def extractor_from_provenance(provenance, vgg_weights=None, offline=False, device="cpu", batch_size=32, workers=0):
    """An Extractor that makes features exactly as the feature file whose "__provenance__" record this is.

    `vgg_weights`: the weights file it names (checked by sha256); when None, torchvision's checkpoint is found in
    (or downloaded to, unless `offline`) torchvision's cache. Raises DataError saying what to pass otherwise.
    """
    if not isinstance(provenance, dict):
        raise DataError("The feature file has no provenance record, so how its features were made is unknown: "
                        "re-extract it with save_vgg_feature.py (which records it), then use that file; or, if you "
                        "know how it was made, say so with main.py --image_pipeline MODE (the published "
                        "img_vgg_features.pt: --image_pipeline seed).")
    lacking = [key for key in PROVENANCE_NEEDED if not provenance.get(key)]
    if lacking or provenance["mode"] not in MODES or provenance["dtype"] not in ("float32", "float16"):
        raise DataError(f"The provenance record lacks {lacking or 'a known mode and dtype'} (it has "
                        f"{sorted(provenance)}): re-extract the features with save_vgg_feature.py.")
    mode, name, sha256 = provenance["mode"], provenance["weights_file"], provenance["weights_sha256"]
    wanted = f"--vgg_weights PATH to {name} (sha256 {sha256})"
    if vgg_weights is None:
        if not sha256.startswith(TORCHVISION_SHA256_PREFIX):
            raise DataError(f"These features were made with {name}; pass {wanted}.")
        vgg_weights = default_weights_path()
        if not os.path.isfile(vgg_weights):
            if offline:
                raise DataError(f"These features were made with {name}, not in {vgg_weights}, and offline forbids "
                                f"downloading it: pass {wanted}, or allow downloading ({downloads.VGG16_WEIGHTS_URL}).")
            vgg_weights = resolve_weights(None, offline=False)
    problem = utils.not_a_file(vgg_weights)
    if problem:
        raise DataError(f"{vgg_weights}: weights file {'not found' if problem == 'does not exist' else problem}; "
                        f"pass {wanted}.")
    weights = weights_info(vgg_weights)
    if weights["sha256"] != sha256:
        raise DataError(f"{vgg_weights}: sha256 {weights['sha256']}, but these features were made with {name} "
                        f"(sha256 {sha256}): pass {wanted}.")
    for package, version in (("torch", str(torch.__version__)), ("pillow", str(PIL.__version__))):
        if provenance.get(f"{package}_version", version) != version:
            logger.warning("The features were made with %s %s, this is %s: values may differ slightly (decoding, "
                           "resizing, convolution).", package, provenance[f"{package}_version"], version)
    check_pairing(mode, vgg_weights, weights, force=bool(provenance.get("forced", 0)))
    model = load_weights(VGG16Features(), vgg_weights)
    return Extractor(model, mode, getattr(torch, provenance["dtype"]), device, batch_size, workers)
