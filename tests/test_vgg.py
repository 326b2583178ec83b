"""save_vgg_feature.py on images drawn here, with a random-weight VGG16 (no torchvision, no network)."""
import numpy as np
import pytest
import torch
from PIL import Image

import data_loader as data
import image_features
import images
import save_vgg_feature
import vgg
import downloads
from conftest import write_conll

# torchvision's vgg16().features: convolutions at these indices (ReLU after each, max-pool at 4, 9, 16, 23, 30)
TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def draw_images(img_dir):
    """One image per case a Twitter crawl produces; returns {id: should_succeed}."""
    img_dir.mkdir(parents=True, exist_ok=True)
    gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    stripes = gradient.T[:48, :48].repeat(2, 1)[:, :64]
    Image.fromarray(np.stack([gradient, stripes, gradient], -1)).save(img_dir / "rgb.jpg")
    Image.fromarray(gradient, mode="L").save(img_dir / "gray.png")
    palette = Image.fromarray(gradient, mode="L").convert("P")
    palette.info["transparency"] = 0
    palette.save(img_dir / "palette.png", transparency=0)
    Image.new("RGBA", (30, 40), (200, 10, 10, 128)).save(img_dir / "rgba.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(img_dir / "cmyk.jpg")
    Image.fromarray((np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20)).save(img_dir / "deep16.png")
    rotated = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    rotated.save(img_dir / "rotated.jpeg", exif=exif)
    whole = (img_dir / "rgb.jpg").read_bytes()
    (img_dir / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (img_dir / "notimage.jpg").write_text("<html>rate limited</html>")
    return {"rgb": True, "gray": True, "palette": True, "rgba": True, "cmyk": True, "deep16": True,
            "rotated": True, "truncated": False, "notimage": False, "missing": False}


def test_images_of_every_kind_are_converted_or_reported(tmp_path):
    cases = draw_images(tmp_path / "img")
    torch.manual_seed(0)
    model = vgg.VGG16Features()
    features, failures = vgg.extract(model, str(tmp_path / "img"), list(cases), batch_size=4, progress=False)
    assert set(features) == {i for i, ok in cases.items() if ok}
    assert {i for i, _ in failures} == {i for i, ok in cases.items() if not ok}
    reasons = dict(failures)
    assert reasons["missing"].startswith("missing: no missing{.jpg,.png,.jpeg}")
    assert reasons["truncated"].startswith("unreadable: truncated.jpg: OSError")
    assert reasons["notimage"].startswith("unreadable: notimage.jpg: UnidentifiedImageError")
    for regions in features.values():
        assert regions.shape == (49, 512) and regions.dtype == torch.float32 and torch.isfinite(regions).all()

    # regions in row-major order of the 7 x 7 pool5 grid, same as running the network by hand
    pixels = vgg.load_pixels(str(tmp_path / "img" / "rgb.jpg"), "torchvision")
    with torch.no_grad():
        pooled = model.features(pixels[None])[0]  # (512, 7, 7)
    torch.testing.assert_close(features["rgb"][7 * 2 + 3], pooled[:, 2, 3])


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """A redirected log gets no carriage returns and escape codes from tqdm (capsys's stderr is not a terminal)."""
    draw_images(tmp_path / "img")
    features, _ = vgg.extract(vgg.VGG16Features(), str(tmp_path / "img"), ["rgb", "gray"], batch_size=1, progress=True)
    assert set(features) == {"rgb", "gray"}
    err = capsys.readouterr().err
    assert "Extracting" not in err and "\r" not in err


def test_conversions_keep_content_upright_and_eight_bit(tmp_path):
    draw_images(tmp_path)
    assert images.open_image(tmp_path / "rotated.jpeg").size == (20, 40)  # EXIF orientation applied
    with Image.open(tmp_path / "deep16.png") as image:
        assert image.mode.startswith("I")
    rgb = np.asarray(images.open_image(tmp_path / "deep16.png"))
    assert rgb.dtype == np.uint8 and rgb.max() > 200 and rgb.min() < 10  # scaled, not clipped to white
    # half-transparent red over white: 200 * 128/255 + 255 * 127/255 = 227
    assert images.open_image(tmp_path / "rgba.png").getpixel((0, 0)) == (227, 132, 132)
    r, g, b = images.open_image(tmp_path / "cmyk.jpg").getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60
    for name in ("gray.png", "palette.png", "rgb.jpg"):
        assert images.open_image(tmp_path / name).mode == "RGB"


def test_preprocessing_matches_the_weights():
    red = Image.new("RGB", (224, 224), (255, 0, 0))
    torchvision_pixels = vgg.normalise(red, "torchvision")
    assert torchvision_pixels[0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert torchvision_pixels[2, 0, 0].item() == pytest.approx((0 - 0.406) / 0.225, rel=1e-5)
    caffe = vgg.normalise(red, "caffe")  # BGR, 0-255, mean subtracted
    assert caffe[0, 0, 0].item() == pytest.approx(0 - 103.939)
    assert caffe[2, 0, 0].item() == pytest.approx(255 - 123.68)


def torchvision_style_checkpoint(path, seed=1):
    """A state dict named as torchvision's vgg16().state_dict(), classifier included, random values."""
    torch.manual_seed(seed)
    state = dict(vgg.VGG16Features().state_dict())
    state.update({"classifier.0.weight": torch.zeros(4, 3), "classifier.0.bias": torch.zeros(4)})
    torch.save(state, path)
    return state


def test_torchvision_checkpoint_loads_unchanged(tmp_path):
    names = [name for name, _ in vgg.VGG16Features().named_parameters()]
    assert names == [f"features.{i}.{kind}" for i in TORCHVISION_CONV_INDICES for kind in ("weight", "bias")]
    state = torchvision_style_checkpoint(tmp_path / "vgg16.pth")
    model = vgg.load_vgg16_weights(vgg.VGG16Features(), str(tmp_path / "vgg16.pth"))
    torch.testing.assert_close(model.features[28].weight, state["features.28.weight"])
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(data.DataError, match="not a torchvision VGG16 checkpoint"):
        vgg.load_vgg16_weights(vgg.VGG16Features(), str(tmp_path / "wrong.pth"))


def test_command_line_run_float16_report_and_training_loader(tmp_path, capsys):
    data_dir = tmp_path / "data"
    cases = draw_images(data_dir / "ner_img")
    ids = list(cases)
    write_conll(data_dir / "train", [(i, [("a", "O")]) for i in ids[:5]])
    write_conll(data_dir / "dev", [(i, [("b", "O")]) for i in ids[5:8]])
    write_conll(data_dir / "test", [(i, [("c", "O")]) for i in ids[8:]] + [("rgb", [("d", "O")])])
    torchvision_style_checkpoint(tmp_path / "vgg16.pth")
    assert save_vgg_feature.main(["--data_dir", str(data_dir), "--vgg_weights", str(tmp_path / "vgg16.pth"), "--dtype",
                     "float16", "--batch_size", "3", "--workers", "2"]) == 0
    assert "Wrote 7 features" in capsys.readouterr().out
    saved, provenance = image_features.read_features(data_dir / "img_vgg_features.pt")
    assert (provenance["num_images"], provenance["num_failures"], provenance["dtype"]) == (10, 3, "float16")
    assert set(saved) == {i for i, ok in cases.items() if ok}
    assert all(v.dtype == torch.float16 and v.shape == (49, 512) for v in saved.values())
    report = (data_dir / "img_vgg_features.pt.failures.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in report) == ["missing", "notimage", "truncated"]
    table = image_features.load_image_features(str(data_dir / "img_vgg_features.pt"), ids)
    assert table.missing_ids == ["truncated", "notimage", "missing"]
    torch.testing.assert_close(table.gather(table.rows(["gray"]))[0], saved["gray"].float())


def test_no_weights_offline_names_both_ways(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    write_conll(tmp_path / "train", [("1", [("a", "O")])])
    assert save_vgg_feature.main(["--data_dir", str(tmp_path), "--files", "train", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "--vgg_weights PATH" in err and downloads.VGG16_WEIGHTS_URL in err and "hub/checkpoints" in err
    assert save_vgg_feature.main(["--data_dir", str(tmp_path), "--files", "train", "--vgg_weights", str(tmp_path / "x.pth")]) == 2
    assert "x.pth: --vgg_weights file not found" in capsys.readouterr().err
