"""images.py: one way to open an image, and one exception for every way it can be unusable."""
import numpy as np
import pytest
import torch
from PIL import Image

import images
import vgg


def test_open_image_gives_upright_eight_bit_rgb(tmp_path):
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1)), mode="L")  # 64 wide, 10 high
    exif = grey.getexif()
    exif[0x0112] = 8  # orientation: rotate 90 degrees counter-clockwise to display
    grey.save(tmp_path / "grey.jpg", exif=exif, quality=95)
    image = images.open_image(tmp_path / "grey.jpg")
    assert image.mode == "RGB" and image.size == (10, 64)
    column = np.asarray(image)[:, 5, 0].astype(int)  # dark on the left became dark at the bottom
    assert column[0] > 230 and column[-1] < 20


def test_unusable_files_raise_image_error_naming_file_and_reason(tmp_path):
    (tmp_path / "page.jpg").write_text("<html>rate limited</html>")
    with pytest.raises(images.ImageError, match=r"page\.jpg: unreadable image: UnidentifiedImageError") as info:
        images.open_image(tmp_path / "page.jpg")
    assert isinstance(info.value, ValueError) and info.value.path.endswith("page.jpg")
    with pytest.raises(images.ImageError, match="FileNotFoundError"):
        images.open_image(tmp_path / "absent.png")


def test_decompression_bomb_is_an_image_error(tmp_path, monkeypatch):
    Image.new("RGB", (64, 48), (1, 2, 3)).save(tmp_path / "huge.png")  # 3072 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses images over twice the limit
    with pytest.raises(images.ImageError, match=r"huge\.png: unreadable image: DecompressionBombError"):
        images.open_image(tmp_path / "huge.png")


def test_huge_image_is_listed_and_the_others_extracted(tmp_path, monkeypatch):
    Image.new("RGB", (64, 48), (1, 2, 3)).save(tmp_path / "huge.png")  # 3072 pixels: over 2 x 1000
    Image.new("RGB", (30, 30), (200, 10, 10)).save(tmp_path / "small.png")  # 900 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    torch.manual_seed(0)
    features, failures = vgg.extract(vgg.VGG16Features(), str(tmp_path), ["huge", "small"], batch_size=2,
                                     progress=False)
    assert list(features) == ["small"] and features["small"].shape == (49, 512)
    assert [key for key, _ in failures] == ["huge"]
    assert failures[0][1].startswith("unreadable: huge.png: DecompressionBombError")
