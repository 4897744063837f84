"""CelebA (img_align_celeba): a small zip in the release's layout (JPEGs of 178x218 named
000001.jpg ...), converted from --file, from a folder and from --url (HTTP on 127.0.0.1);
order and the full-frame Lanczos resize against an independent Pillow computation; what
is verified; refusals in one line with nothing written."""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from disentangle.cli import main
from disentangle.data import celeba
from disentangle.data.convert import fetch_dataset
from disentangle.data.datasets import DatasetError, open_dataset, open_file

COUNT = 6


def _face(k: int, size=(178, 218)) -> bytes:
    """A JPEG of a face-like picture: an ellipse 'face' with two 'eyes' on a background."""
    w, h = size
    rng = np.random.default_rng(k)
    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    face = ((xx - w / 2) / (0.3 * w)) ** 2 + ((yy - h * rng.uniform(0.45, 0.55)) / (0.3 * h)) ** 2 < 1
    img[face] = rng.integers(100, 256, 3)
    for ex in (0.4, 0.6):
        img[(xx - ex * w) ** 2 + (yy - 0.45 * h) ** 2 < 36] = 20
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _zip(path: Path, jpegs: dict[str, bytes], prefix="img_align_celeba/"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(prefix, b"")                                   # the folder entry, as in the official zip
        for name in sorted(jpegs, reverse=True):                   # members not in index order
            zf.writestr(prefix + name, jpegs[name])
    return path


def _expected(jpeg: bytes) -> np.ndarray:
    """disentangling-vae's preprocessing, independently: the whole frame, one Lanczos resize."""
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((64, 64), Image.LANCZOS))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    jpegs = {f"{i:06d}.jpg": _face(i) for i in range(1, COUNT + 1)}
    good = _zip(root / "img_align_celeba.zip", jpegs)
    _zip(root / "gap.zip", {k: v for k, v in jpegs.items() if k != "000003.jpg"})
    _zip(root / "wrongsize.zip", {**jpegs, "000004.jpg": _face(4, size=(218, 178))})
    png = io.BytesIO()
    Image.new("RGB", (178, 218)).save(png, "PNG")
    _zip(root / "png.zip", {**jpegs, "000002.jpg": png.getvalue()})
    (root / "notazip.zip").write_bytes(b"PK but not a zip")
    folder = root / "unpacked"
    with zipfile.ZipFile(good) as zf:
        zf.extractall(folder)
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: _QuietHandler(*a, directory=str(root), **k))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"root": root, "zip": good, "folder": folder / "img_align_celeba", "jpegs": jpegs,
           "sha": hashlib.sha256(good.read_bytes()).hexdigest(), "url": f"http://127.0.0.1:{httpd.server_address[1]}"}
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _check_converted(ds, release):
    jpegs = release["jpegs"]
    assert ds.name == "celeba" and ds.ground_truth is None and ds.num_images == COUNT
    assert ds.image_shape == (3, 64, 64) and ds.bits_per_channel == 8
    names = sorted(jpegs)
    assert [n.split("/")[-1] for n in ds.source_names] == names          # index i is (i+1):06d.jpg
    got = ds.read_uint8(np.arange(COUNT))
    for i, n in enumerate(names):
        np.testing.assert_array_equal(got[i], _expected(jpegs[n]), err_msg=n)
    ds.verify()


def test_zip_converted_verified_and_recorded(release, tmp_path):
    path = fetch_dataset("celeba", out=tmp_path / "celeba.h5", file=release["zip"], expected_count=COUNT)
    ds = open_dataset("celeba", path)
    _check_converted(ds, release)
    prov = ds.provenance
    (record,) = prov["source_files"]
    assert record["name"] == "img_align_celeba.zip" and record["sha256"] == release["sha"]
    checks = prov["verified"]["img_align_celeba.zip"]
    assert "no official checksum: sha256 recorded" in checks
    assert f"{COUNT} JPEGs named 000001.jpg-{COUNT:06d}.jpg" in checks and "every JPEG 178x218 RGB" in checks
    assert f"count {COUNT} (as expected)" in checks
    assert prov["source"] == "official" and prov["preprocessing"]["crop"] == "none"
    assert "disentangling-vae" in prov["preprocessing"]["reference"]


def test_folder_gives_the_same_images(release, tmp_path):
    a = fetch_dataset("celeba", out=tmp_path / "a.h5", file=release["zip"], expected_count=COUNT)
    b = fetch_dataset("celeba", out=tmp_path / "b.h5", file=release["folder"], expected_count=COUNT)
    da, db = open_file(a), open_file(b)
    assert da.attrs["content_sha256"] == db.attrs["content_sha256"]
    _check_converted(db, release)
    assert db.provenance["source_files"][0]["kind"] == "folder"


def test_cli_count_is_verified_unless_any_count(release, tmp_path, monkeypatch):
    monkeypatch.setenv("DISENTANGLE_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(main, ["data", "fetch", "celeba", "--file", str(release["zip"])])
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert r.exit_code == 1 and len(errors) == 1, r.output
    assert "6 JPEGs, the official release has 202,599" in errors[0] and "--any-count" in errors[0]
    assert not list(tmp_path.rglob("*.h5"))
    r = CliRunner().invoke(main, ["data", "fetch", "celeba", "--file", str(release["zip"]), "--any-count"])
    assert r.exit_code == 0, r.output
    ds = open_dataset("celeba")               # by the path rule: $DISENTANGLE_DATA_DIR/celeba.h5
    _check_converted(ds, release)
    assert "count 6 differs from the official 202,599: not verified" in ds.provenance["verified"]["img_align_celeba.zip"]
    r = CliRunner().invoke(main, ["data", "info", "celeba"])
    assert r.exit_code == 0 and "content_check:    verified" in r.output and "factors:          none" in r.output


def test_url_download_with_pinned_sha256(release, tmp_path):
    url = release["url"] + "/img_align_celeba.zip"
    out = tmp_path / "celeba.h5"
    r = CliRunner().invoke(main, ["data", "fetch", "celeba", "--url", url, "--sha256", "0" * 64,
                                  "--any-count", "--out", str(out)])
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert r.exit_code == 1 and len(errors) == 1 and "checksum mismatch" in errors[0], r.output
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    r = CliRunner().invoke(main, ["data", "fetch", "celeba", "--url", url, "--sha256", release["sha"],
                                  "--any-count", "--out", str(out)])
    assert r.exit_code == 0, r.output
    ds = open_dataset("celeba", out)
    _check_converted(ds, release)
    assert ds.provenance["verified"]["img_align_celeba.zip"][0] == "sha256"
    assert ds.provenance["source_files"][0]["url"] == url


@pytest.mark.parametrize("case,expect", [("gap.zip", "000003.jpg is missing"),
                                         ("wrongsize.zip", "000004.jpg: JPEG 218x178 RGB, expected a JPEG of 178x218"),
                                         ("png.zip", "000002.jpg: PNG 178x218"),
                                         ("notazip.zip", "not a folder or a readable zip"),
                                         (None, "the official host needs a browser")])
def test_bad_input_refused_in_one_line(release, tmp_path, case, expect):
    args = ["data", "fetch", "celeba", "--any-count", "--out", str(tmp_path / "data" / "celeba.h5")]
    if case is not None:
        args += ["--file", str(release["root"] / case)]
    r = CliRunner().invoke(main, args)
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert r.exit_code == 1 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert expect in errors[0], errors[0]
    assert not (tmp_path / "data").exists() or not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_downloaded_wrong_layout_leaves_nothing(release, tmp_path):
    with pytest.raises(DatasetError, match="000003.jpg is missing"):
        fetch_dataset("celeba", out=tmp_path / "celeba.h5", url=release["url"] + "/gap.zip", expected_count=None)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
