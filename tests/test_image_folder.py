"""`data import-folder`: any folder or zip of images -> a named dataset without factors.
Order, crop and resize checked against an independent numpy/Pillow computation; opening by
name; refusals in one line with nothing written."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from disentangle.cli import main
from disentangle.data.datasets import DatasetError, dataset_class, open_dataset, open_file
from disentangle.data.image_folder import ImageFolder, import_folder
from disentangle.errors import ParameterError

# (relative path, width, height): non-square both ways, one already 64x64, odd offsets
FILES = [("b/zeta.png", 97, 76), ("a.jpg", 80, 120), ("b/alpha.png", 64, 64), ("B.png", 150, 90),
         ("a/c/deep.jpeg", 70, 71), ("rgba.png", 88, 66)]


def _shape_image(width, height, seed) -> np.ndarray:
    """A coloured ellipse and rectangle on a coloured background (structured, not noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    img = np.empty((height, width, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    ellipse = ((xx - cx) / (0.2 * width)) ** 2 + ((yy - cy) / (0.3 * height)) ** 2 < 1
    img[ellipse] = rng.integers(0, 256, 3)
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    img[y0:y0 + height // 4, x0:x0 + width // 5] = rng.integers(0, 256, 3)
    return img


def _write_folder(root: Path) -> dict[str, np.ndarray]:
    """The test folder, and each image's RGB pixels as decoded (what the converter must see)."""
    pixels = {}
    for k, (rel, w, h) in enumerate(FILES):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = _shape_image(w, h, k)
        if rel == "rgba.png":        # binary alpha: composited over black is exact in numpy
            alpha = np.where(np.arange(w)[None, :] < w // 2, 255, 0).astype(np.uint8) * np.ones((h, 1), np.uint8)
            Image.fromarray(np.dstack([img, alpha]), "RGBA").save(path)
            pixels[rel] = img * (alpha[..., None] // 255)
            continue
        Image.fromarray(img).save(path, quality=90) if rel.endswith((".jpg", ".jpeg")) else Image.fromarray(img).save(path)
        pixels[rel] = np.asarray(Image.open(path).convert("RGB"))
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return pixels


def _expected(rgb: np.ndarray, crop: str, grey: bool) -> np.ndarray:
    """Independent: numpy crop (torchvision's centre rounding), then one Pillow Lanczos resize."""
    h, w = rgb.shape[:2]
    if crop != "none":
        side = min(h, w) if crop == "center" else int(crop.split(":")[1])
        top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
        rgb = rgb[top:top + side, left:left + side]
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if grey:
        img = img.convert("L")
    out = np.asarray(img.resize((64, 64), Image.LANCZOS) if img.size != (64, 64) else img)
    return out[..., None] if grey else out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pics")
    return root, _write_folder(root)


def _one_error_line(result):
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code != 0 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("crop,grey", [("center", False), ("none", False), ("center:60", True)])
def test_order_crop_resize_against_independent(folder, tmp_path, crop, grey):
    root, pixels = folder
    path, source = import_folder(root, "shapes", out=tmp_path / "shapes.h5", crop=crop, channels=1 if grey else 3)
    ds = open_file(path)
    order = sorted(pixels)                      # sorted relative paths: 'B.png' < 'a.jpg' < 'a/c/deep.jpeg' ...
    assert order[0] == "B.png" and order[1] == "a.jpg"
    assert ds.source_names == order and source.ignored == 1     # notes.txt skipped, .DS_Store hidden
    assert ds.name == "shapes" and ds.ground_truth is None and ds.num_images == len(FILES)
    assert ds.image_shape == ((1 if grey else 3), 64, 64) and ds.bits_per_channel == 8
    got = ds.read_uint8(np.arange(len(order)))
    for i, rel in enumerate(order):
        np.testing.assert_array_equal(got[i], _expected(pixels[rel], crop, grey), err_msg=rel)
    idx = np.array([4, 0, 4])
    np.testing.assert_array_equal(ds.images(idx), got[idx].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.torch_batch(idx, "cpu").numpy(), ds.images(idx))
    ds.verify()
    prov = ds.provenance
    assert prov["dataset"] == "shapes" and prov["kind"] == "image-folder" and prov["factor_sizes"] is None
    assert prov["preprocessing"]["crop"] == crop and prov["preprocessing"]["resample"] == "lanczos"
    assert prov["source_files"][0]["kind"] == "folder" and prov["source_files"][0]["images"] == len(FILES)
    assert ds.info()["factors"].startswith("none")


def test_zip_equals_folder_and_open_by_name(folder, tmp_path, monkeypatch):
    root, _ = folder
    monkeypatch.setenv("DISENTANGLE_DATA_DIR", str(tmp_path / "data"))
    archive = tmp_path / "pics.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(root.rglob("*"), reverse=True):   # members in another order than sorted
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    r = CliRunner().invoke(main, ["data", "import-folder", str(root), "--name", "from-folder"])
    assert r.exit_code == 0, r.output
    assert "6 images" in r.output and "1 other files skipped" in r.output
    r = CliRunner().invoke(main, ["data", "import-folder", str(archive), "--name", "from_zip"])
    assert r.exit_code == 0, r.output
    a, b = open_dataset("from-folder"), open_dataset("from_zip")
    assert dataset_class("from_zip") is ImageFolder
    assert a.attrs["content_sha256"] == b.attrs["content_sha256"] and a.source_names == b.source_names
    assert b.provenance["source_files"][0]["kind"] == "zip"
    r = CliRunner().invoke(main, ["data", "info", "from_zip"])
    assert r.exit_code == 0, r.output
    assert "from_zip" in r.output and "content_check:    verified" in r.output and "num_images:       6" in r.output
    # a file copied under another name holds the first name: refused, not silently renamed
    shutil.copy(tmp_path / "data" / "from_zip.h5", tmp_path / "data" / "other.h5")
    with pytest.raises(DatasetError, match="holds image set 'from_zip', not 'other'"):
        open_dataset("other")
    with pytest.raises(ParameterError, match="unknown dataset"):
        open_dataset("never-imported")
    with pytest.raises(ParameterError, match="kind of imported image sets"):
        open_dataset("image-folder")


@pytest.mark.parametrize("case", ["empty", "only-text", "corrupt", "bad-name", "builtin-name", "bad-crop",
                                  "crop-too-big", "exists"])
def test_refusals_one_line_nothing_written(folder, tmp_path, case):
    root, _ = folder
    src = tmp_path / "src"
    shutil.copytree(root, src)
    data = tmp_path / "data"
    args = ["data", "import-folder", str(src), "--name", "pics", "--out", str(data / "pics.h5")]
    expect = {"empty": "no image files", "only-text": "no image files", "corrupt": "broken.png: not a readable image",
              "bad-name": "--name Pics!", "builtin-name": "built-in dataset", "bad-crop": "--crop middle",
              "crop-too-big": "smaller than the crop center:100", "exists": "--overwrite"}[case]
    if case in ("empty", "only-text"):
        shutil.rmtree(src)
        src.mkdir()
        if case == "only-text":
            (src / "readme.md").write_text("hello")
    elif case == "corrupt":
        (src / "zz").mkdir()
        (src / "zz" / "broken.png").write_bytes(b"\x89PNG but not really")
    elif case == "bad-name":
        args[4] = "Pics!"
    elif case == "builtin-name":
        args[4] = "shapes3d"
    elif case == "bad-crop":
        args += ["--crop", "middle"]
    elif case == "crop-too-big":
        args += ["--crop", "center:100"]       # larger than the 64x64 and 70x71 images
    elif case == "exists":
        data.mkdir()
        (data / "pics.h5").write_bytes(b"precious")
    message = _one_error_line(CliRunner().invoke(main, args))
    assert expect in message, message
    if case == "exists":
        assert (data / "pics.h5").read_bytes() == b"precious"
    else:
        assert not data.exists() or not any(data.iterdir())
