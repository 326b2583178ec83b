"""save_vgg_feature.py's --preprocess modes, weights, provenance and the Extractor rebuilt from a provenance record.

Expected values are derived by hand from the two sources, not from our code:
- seed (monologg/NER-Multimodal-pytorch save_vgg_feature.py): `Image.open` -> `im.resize((224, 224))` (Pillow 7.0:
  bicubic) -> `np.array` (uint8 RGB) -> `im[:, :, c] = im[:, :, c] - mean_pixel[c]` with mean_pixel = [103.939,
  116.779, 123.68] on R, G, B -> float tensor in RGB order.
- authors (jinlanfu/NERmultimodal vgg_image_feature.py): `cv2.resize(cv2.imread(path), (224, 224))` (uint8 BGR,
  bilinear) -> the same in-place subtraction on B, G, R -> BGR order.
The write-back into uint8 is C's float-to-integer conversion: truncation toward zero, low 8 bits kept (x86), so
10 - 103.939 = -93.939 -> -93 -> 163.
"""
import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import data_loader as data
import image_features
import save_vgg_feature
import vgg
from conftest import data_folder, torch_checkpoint, uniform_png

def channel_values(pixels):
    """The single value of each channel of a uniform (3, H, W) tensor."""
    assert all(torch.unique(channel).numel() == 1 for channel in pixels)
    return [channel[0, 0].item() for channel in pixels]


def test_each_mode_on_one_colour_order_means_and_wraparound(tmp_path):
    path = uniform_png(tmp_path / "dark.jpg", (10, 200, 120))  # R, G, B; .jpg name, PNG content (both read it)
    # seed: RGB order; R - 103.939 = -93.939 -> -93 -> 163; G - 116.779 = 83.221 -> 83; B - 123.68 = -3.68 -> 253
    assert channel_values(vgg.load_pixels(path, "seed")) == [163, 83, 253]
    # authors: BGR order; B - 103.939 = 16.061 -> 16; G -> 83; R - 123.68 = -113.68 -> -113 -> 143
    assert channel_values(vgg.load_pixels(path, "authors")) == [16, 83, 143]
    # caffe (correct): BGR, Caffe means, no wraparound
    assert channel_values(vgg.load_pixels(path, "caffe")) == pytest.approx([16.061, 83.221, -113.68], abs=1e-4)
    # torchvision (correct): RGB / 255, ImageNet mean and std
    expected = [(10 / 255 - 0.485) / 0.229, (200 / 255 - 0.456) / 0.224, (120 / 255 - 0.406) / 0.225]
    assert channel_values(vgg.load_pixels(path, "torchvision")) == pytest.approx(expected, abs=1e-5)


def test_wraparound_truncates_toward_zero_then_wraps(tmp_path):
    # 224 x 224 already: neither source's resize changes a pixel, so each row checks one value
    values = np.array([0, 10, 103, 104, 123, 124, 200, 255], dtype=np.uint8)
    rows = np.repeat(values, 28)[:, None].repeat(224, axis=1)  # (224, 224) row band per value
    Image.fromarray(np.stack([rows, rows, rows], axis=-1)).save(tmp_path / "bands.png")
    seed = vgg.load_pixels(str(tmp_path / "bands.png"), "seed")[:, ::28, 0]  # (3, 8) one value per band
    authors = vgg.load_pixels(str(tmp_path / "bands.png"), "authors")[:, ::28, 0]
    minus_103_939 = [153, 163, 0, 0, 19, 20, 96, 151]  # e.g. 103 -> -0.939 -> 0; 0 -> -103.939 -> -103 -> 153
    minus_123_68 = [133, 143, 236, 237, 0, 0, 76, 131]  # e.g. 103 -> -20.68 -> -20 -> 236; 123 -> -0.68 -> 0
    assert seed[0].tolist() == minus_103_939 and seed[2].tolist() == minus_123_68  # R gets 103.939, B 123.68
    assert authors[0].tolist() == minus_103_939 and authors[2].tolist() == minus_123_68  # B gets 103.939


def noise_image(seed, size=(448, 448)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def wrapped(array, means=vgg.SOURCES_MEAN_PIXEL):
    """The sources' in-place uint8 subtraction, written out: truncate toward zero, then modulo 256."""
    return np.trunc(array.astype(np.float64) - np.array(means)).astype(np.int64) % 256


def test_seed_resizes_bicubic_without_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display; the seed never applies it
    noise_image(1, (448, 300)).save(tmp_path / "photo.jpg", exif=exif, quality=90)
    with Image.open(tmp_path / "photo.jpg") as image:
        stored = np.asarray(image.resize((224, 224), Image.BICUBIC))  # (224, 224, 3) Pillow 7.0's default filter
        bilinear = np.asarray(image.resize((224, 224), Image.BILINEAR))
    pixels = vgg.load_pixels(str(tmp_path / "photo.jpg"), "seed")  # (3, 224, 224)
    expected = torch.from_numpy(wrapped(stored).astype(np.float32)).permute(2, 0, 1)
    assert torch.equal(pixels, expected)
    assert not torch.equal(pixels, torch.from_numpy(wrapped(bilinear).astype(np.float32)).permute(2, 0, 1))
    upright = vgg.load_pixels(str(tmp_path / "photo.jpg"), "torchvision")  # the correct mode does rotate it
    assert not torch.allclose(upright, vgg.normalise(Image.fromarray(bilinear), "torchvision"), atol=0.1)


def test_seed_takes_grey_as_three_channels_and_drops_alpha(tmp_path):
    Image.new("L", (224, 224), 10).save(tmp_path / "grey.png")
    # 10 in all three channels: 10 - 103.939 -> 163, 10 - 116.779 = -106.779 -> 150, 10 - 123.68 -> 143
    assert channel_values(vgg.load_pixels(str(tmp_path / "grey.png"), "seed")) == [163, 150, 143]
    Image.new("RGBA", (224, 224), (10, 200, 120, 0)).save(tmp_path / "clear.png")  # alpha ignored, not composited
    assert channel_values(vgg.load_pixels(str(tmp_path / "clear.png"), "seed")) == [163, 83, 253]
    Image.new("LA", (224, 224), (10, 255)).save(tmp_path / "grey_alpha.png")  # the seed crashes on these
    with pytest.raises(vgg.ImageError, match="2-channel"):
        vgg.load_pixels(str(tmp_path / "grey_alpha.png"), "seed")


def test_authors_resize_is_opencv_bilinear(tmp_path):
    image = noise_image(2)
    image.save(tmp_path / "photo.png")
    bgr = np.asarray(image)[:, :, ::-1].astype(np.int64)  # (448, 448, 3) as cv2.imread gives it
    # bilinear at exactly half size samples between each 2 x 2 block: their mean, rounded half up
    halved = (bgr.reshape(224, 2, 224, 2, 3).sum(axis=(1, 3)) + 2) // 4  # (224, 224, 3)
    expected = torch.from_numpy(wrapped(halved).astype(np.float32)).permute(2, 0, 1)
    assert torch.equal(vgg.load_pixels(str(tmp_path / "photo.png"), "authors"), expected)


def test_authors_mode_reports_what_opencv_cannot_read(tmp_path):
    (tmp_path / "page.jpg").write_text("<html>rate limited</html>")
    with pytest.raises(vgg.ImageError, match="OpenCV cannot decode it"):
        vgg.load_pixels(str(tmp_path / "page.jpg"), "authors")


def test_missing_opencv_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ImportError
    with pytest.raises(data.DataError, match="pip install opencv-python-headless"):
        vgg.check_mode_available("authors")
    vgg.check_mode_available("seed")  # the other modes do not need it


# ----------------------------------------------------------------------------------------------------------------
# Weights

def write_keras_th_h5(path, first_kernel=None, seed=0):
    """A file laid out as Keras 1's vgg16_weights_th_dim_ordering_th_kernels_notop.h5: root attribute layer_names,
    one group per layer with attribute weight_names, kernels (out, in, 3, 3). Returns {layer: (kernel, bias)}."""
    rng = np.random.default_rng(seed)
    model = vgg.VGG16Features()
    layers = {}
    with h5py.File(path, "w") as f:
        names = ["input_1"]
        for block in range(1, 6):
            names += [n for n in vgg.KERAS_CONV_LAYERS if n.startswith(f"block{block}_")] + [f"block{block}_pool"]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            group = f.create_group(name)
            if "conv" not in name:
                group.attrs["weight_names"] = []
                continue
            conv = model.features[vgg.TORCHVISION_CONV_INDICES[vgg.KERAS_CONV_LAYERS.index(name)]]
            kernel = np.zeros(conv.weight.shape, np.float32)  # (out, in, 3, 3)
            if name in ("block1_conv2", "block5_conv3"):
                kernel = rng.standard_normal(conv.weight.shape).astype(np.float32)
            if name == "block1_conv1" and first_kernel is not None:
                kernel = first_kernel
            bias = rng.standard_normal(conv.bias.shape).astype(np.float32)
            group.attrs["weight_names"] = [f"{name}_W".encode(), f"{name}_b".encode()]
            group.create_dataset(f"{name}_W", data=kernel)
            group.create_dataset(f"{name}_b", data=bias)
            layers[name] = (kernel, bias)
    return layers


def test_keras_theano_kernels_are_rotated_to_cross_correlation(tmp_path):
    delta = np.zeros((64, 3, 3, 3), np.float32)
    delta[0, 0, 0, 0] = 1.0  # output 0 = input 0 through kernel tap (0, 0)
    layers = write_keras_th_h5(tmp_path / "vgg16_weights_th_dim_ordering_th_kernels_notop.h5", first_kernel=delta)
    model = vgg.load_weights(vgg.VGG16Features(), str(tmp_path / "vgg16_weights_th_dim_ordering_th_kernels_notop.h5"))
    kernel, bias = layers["block1_conv2"]
    torch.testing.assert_close(model.features[2].weight, torch.from_numpy(kernel[:, :, ::-1, ::-1].copy()))
    torch.testing.assert_close(model.features[28].bias, torch.from_numpy(layers["block5_conv3"][1]))
    # Theano's conv2d is a true convolution: out[y, x] = sum_ij in_padded[y + i, x + j] * k[2 - i, 2 - j], so tap
    # (0, 0) reads in_padded[y + 2, x + 2] = in[y + 1, x + 1]: the output is the input shifted up-left by one.
    image = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out = model.features[0](image)[0, 0] - model.features[0].bias[0]  # (8, 8)
    torch.testing.assert_close(out[:-1, :-1], image[0, 0, 1:, 1:])


def test_keras_files_of_the_wrong_layout_are_refused(tmp_path):
    with h5py.File(tmp_path / "tf.h5", "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in vgg.KERAS_CONV_LAYERS]
        for name in vgg.KERAS_CONV_LAYERS:
            group = f.create_group(name)
            group.attrs["weight_names"] = [b"kernel:0", b"bias:0"]
            group.create_dataset("kernel:0", data=np.zeros((3, 3, 3, 64), np.float32))  # (3, 3, in, out): Keras 2
            group.create_dataset("bias:0", data=np.zeros(64, np.float32))
    with pytest.raises(data.DataError, match=r"block1_conv1 has kernel \(3, 3, 3, 64\).*th_dim_ordering_th_kernels"):
        vgg.load_weights(vgg.VGG16Features(), str(tmp_path / "tf.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense_1"]
    with pytest.raises(data.DataError, match=r"no VGG16 conv layers \['block1_conv1'"):
        vgg.load_weights(vgg.VGG16Features(), str(tmp_path / "other.h5"))


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(data_dir, *flags):
    return save_vgg_feature.main(["--data_dir", str(data_dir), "--files", "train", "--workers", "0", *flags])


def test_mode_and_weights_that_cannot_go_together_are_refused(tmp_path, capsys, monkeypatch):
    data_dir = data_folder(tmp_path, good=("a",), bad=(), missing=())
    checkpoint = torch_checkpoint(tmp_path / "vgg16.pth")
    write_keras_th_h5(tmp_path / "keras.h5")
    assert run_cli(data_dir, "--preprocess", "caffe", "--vgg_weights", checkpoint) == 2
    err = capsys.readouterr().err
    assert "--preprocess caffe needs Caffe-converted VGG16 weights" in err and "--force" in err
    assert run_cli(data_dir, "--preprocess", "seed", "--vgg_weights", str(tmp_path / "keras.h5")) == 2
    assert "this is a Keras .h5 file" in capsys.readouterr().err
    assert run_cli(data_dir, "--preprocess", "authors") == 2  # no default Caffe weights: says where to get them
    assert vgg.KERAS_TH_WEIGHTS_URL in capsys.readouterr().err
    monkeypatch.setattr(vgg, "TORCHVISION_SHA256_PREFIX", file_sha256(checkpoint)[:8])
    assert run_cli(data_dir, "--preprocess", "authors", "--vgg_weights", checkpoint) == 2
    assert "torchvision's ImageNet checkpoint vgg16-397923af.pth" in capsys.readouterr().err
    assert run_cli(data_dir, "--preprocess", "caffe", "--vgg_weights", checkpoint, "--force") == 0
    saved, provenance = image_features.read_features(data_dir / "img_vgg_features.pt")
    assert provenance["forced"] == 1 and set(saved) == {"a"}


@pytest.mark.parametrize("flag, value, message", [
    ("--batch_size", "0", "expected an integer from 1 to 1024, got '0'"),
    ("--workers", "-1", "expected an integer >= 0, got '-1'"),
    ("--batch_size", "many", "expected an integer from 1 to 1024, got 'many'"),
    ("--batch_size", "100000", "expected an integer from 1 to 1024, got '100000'"),  # ~40 MB per image: 4 TB
])
def test_bad_counts_are_argparse_errors(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        save_vgg_feature.main([flag, value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"argument {flag}: {message}")


# ----------------------------------------------------------------------------------------------------------------
# Provenance and the Extractor

def test_provenance_is_recorded_and_rebuilds_the_same_pipeline(tmp_path, caplog):
    data_dir = data_folder(tmp_path)
    checkpoint = torch_checkpoint(tmp_path / "vgg16.pth")
    caplog.set_level("INFO")
    assert run_cli(data_dir, "--preprocess", "seed", "--vgg_weights", checkpoint, "--batch_size", "2") == 0
    sha256 = file_sha256(checkpoint)
    assert f"sha256 {sha256}" in caplog.text
    saved, record = image_features.read_features(data_dir / "img_vgg_features.pt")
    assert {k: record[k] for k in ("mode", "weights_file", "weights_sha256", "weights_format", "dtype", "forced",
                                   "num_images", "num_features", "num_failures", "torch_version")} == {
        "mode": "seed", "weights_file": "vgg16.pth", "weights_sha256": sha256, "weights_format": "torch",
        "dtype": "float32", "forced": 0, "num_images": 4, "num_features": 2, "num_failures": 2,
        "torch_version": str(torch.__version__)}
    assert record["image_dir"].endswith("ner_img") and record["date"][:2] == "20"
    assert all(isinstance(v, (str, int, float)) for v in record.values())
    stored = torch.load(data_dir / "img_vgg_features.pt", weights_only=True)  # the file as written, not via the reader
    assert stored[image_features.PROVENANCE_KEY] == record
    assert sorted(stored[image_features.IMAGE_IDS_KEY]) == ["a", "b"]  # the stacked layout, which opens in one read
    assert stored[image_features.REGIONS_KEY].shape == (2, 49, 512)
    assert sorted(saved) == ["a", "b"]

    extractor = vgg.extractor_from_provenance(record, vgg_weights=checkpoint)
    images_dir = data_dir / "ner_img"
    paths = [str(images_dir / "b.jpg"), str(images_dir / "bad.jpg"), str(images_dir / "gone.jpg")]
    features, failures = extractor.features(paths)
    assert list(features) == [paths[0]] and features[paths[0]].dtype == torch.float32
    torch.testing.assert_close(features[paths[0]], saved["b"], rtol=1e-4, atol=1e-4)  # same pipeline, same values
    assert [(p, r.split(":")[0]) for p, r in failures] == [(paths[1], "unreadable"), (paths[2], "missing")]


def test_extractor_refuses_what_it_cannot_rebuild(tmp_path, monkeypatch):
    checkpoint = torch_checkpoint(tmp_path / "vgg16.pth")
    other = torch_checkpoint(tmp_path / "other.pth", seed=2)
    sha256 = file_sha256(checkpoint)
    record = {"mode": "seed", "weights_file": "vgg16.pth", "weights_sha256": sha256, "dtype": "float16"}
    with pytest.raises(data.DataError, match="no provenance record"):
        vgg.extractor_from_provenance(None)
    with pytest.raises(data.DataError, match=r"lacks \['weights_sha256'\]"):
        vgg.extractor_from_provenance({**record, "weights_sha256": ""}, vgg_weights=checkpoint)
    wanted = f"made with vgg16.pth; pass --vgg_weights PATH to vgg16.pth \\(sha256 {sha256}\\)"
    with pytest.raises(data.DataError, match=wanted):
        vgg.extractor_from_provenance(record)
    with pytest.raises(data.DataError, match="other.pth: sha256 [0-9a-f]+, but these features were made with vgg16"):
        vgg.extractor_from_provenance(record, vgg_weights=other)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    torchvision_record = {**record, "weights_file": "vgg16-397923af.pth", "weights_sha256": "397923af" + "0" * 56}
    with pytest.raises(data.DataError, match="offline forbids downloading it: pass --vgg_weights PATH to vgg16-397923af"):
        vgg.extractor_from_provenance(torchvision_record, offline=True)
    extractor = vgg.extractor_from_provenance(record, vgg_weights=checkpoint, batch_size=3)
    assert (extractor.mode, extractor.dtype, extractor.batch_size) == ("seed", torch.float16, 3)


def test_authors_pipeline_end_to_end_with_keras_weights(tmp_path):
    data_dir = data_folder(tmp_path, good=("a",), bad=(), missing=())
    write_keras_th_h5(tmp_path / "vgg16_weights_th_dim_ordering_th_kernels_notop.h5")
    weights = str(tmp_path / "vgg16_weights_th_dim_ordering_th_kernels_notop.h5")
    assert run_cli(data_dir, "--preprocess", "authors", "--vgg_weights", weights) == 0
    saved, record = image_features.read_features(data_dir / "img_vgg_features.pt")
    assert (record["mode"], record["weights_format"], record["weights_file"]) == (
        "authors", "keras_th_h5", "vgg16_weights_th_dim_ordering_th_kernels_notop.h5")
    assert record["opencv_version"] and record["forced"] == 0
    extractor = vgg.extractor_from_provenance(record, vgg_weights=weights)
    features, failures = extractor.features([str(data_dir / "ner_img" / "a.jpg")])
    assert failures == []
    torch.testing.assert_close(features[str(data_dir / "ner_img" / "a.jpg")], saved["a"])


def test_vgg16_matches_torchvision_layout():
    try:
        import torchvision
    except Exception as exc:  # noqa: BLE001 - next to the CPU-only torch wheel it raises RuntimeError, not ImportError
        pytest.skip(f"torchvision cannot be imported here ({type(exc).__name__}: {str(exc)[:120]})")
    torch.manual_seed(0)
    ours = vgg.VGG16Features().eval()
    theirs = torchvision.models.vgg16(weights=None).features.eval()
    theirs.load_state_dict({k.removeprefix("features."): v for k, v in ours.state_dict().items()})
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.features(image), theirs(image))
        pooled = theirs(image)  # (2, 512, 2, 2)
        torch.testing.assert_close(ours(image), pooled.flatten(2).transpose(1, 2))
