"""The dataset layer: each converter on a small file in the official layout, served over
HTTP on 127.0.0.1 for `data fetch`; refusals; index <-> factor order; the registry."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from disentangle.cli import main
from disentangle.data import datasets, mpi3d, smallnorb
from disentangle.data.convert import fetch_dataset
from disentangle.data.datasets import DatasetError, open_dataset, open_file
from disentangle.errors import UserError

SHAPES_SIZES = (2, 2, 1, 2, 1, 3)   # a sub-grid of Shapes3D: 24 images


def _shapes3d_file(path, sizes=SHAPES_SIZES, key="images"):
    """3dshapes.h5 layout: images (N, 64, 64, 3) uint8, labels (N, 6) float64 values,
    orientation fastest (the official values, first classes of each factor)."""
    official = [np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10),
                np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]
    grids = np.meshgrid(*[official[k][:s] for k, s in enumerate(sizes)], indexing="ij")
    labels = np.stack([g.reshape(-1) for g in grids], axis=1)
    images = np.random.default_rng(1).integers(0, 256, (len(labels), 64, 64, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=images, chunks=(1, 64, 64, 3), compression="gzip")
        f.create_dataset("labels", data=labels)
    return images, labels


def _norb_matrix(arr: np.ndarray, magic: int) -> bytes:
    """The NORB binary matrix format: magic, ndim, max(3, ndim) dims (int32 LE), data."""
    dims = list(arr.shape) + [1] * max(0, 3 - arr.ndim)
    return np.array([magic, arr.ndim] + dims, "<i4").tobytes() + arr.tobytes()


def _smallnorb_files(root: Path, bad_magic=False):
    """Six .mat.gz files: categories 2, instances train {1} / test {0}, elevation 2,
    azimuth {0, 2}, lighting 2 (16 rows each, shuffled), 96x96 stereo pairs."""
    rng = np.random.default_rng(2)
    truth = {}
    for chunk, inst in zip(smallnorb.CHUNKS, (1, 0)):
        rows = np.array([(c, inst, e, a, l) for c in range(2) for e in range(2) for a in (0, 2) for l in range(2)])
        rows = rows[rng.permutation(len(rows))]
        dat = rng.integers(0, 256, (len(rows), 2, 96, 96), dtype=np.uint8)
        (root / f"{chunk}-dat.mat.gz").write_bytes(gzip.compress(_norb_matrix(dat, 0x1E3D4C55 + (7 if bad_magic else 0))))
        (root / f"{chunk}-cat.mat.gz").write_bytes(gzip.compress(_norb_matrix(rows[:, 0].astype("<i4"), 0x1E3D4C54)))
        (root / f"{chunk}-info.mat.gz").write_bytes(gzip.compress(_norb_matrix(rows[:, 1:].astype("<i4"), 0x1E3D4C54)))
        for r, d in zip(rows, dat):
            truth[tuple(int(v) for v in r)] = d[0]
    return truth


def _cars_tar(path, names=("car_b.mat", "car_a.mat"), key="im"):
    import scipy.io
    rng = np.random.default_rng(3)
    meshes = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            im = rng.integers(0, 256, (128, 128, 3, 24, 4), dtype=np.uint8)
            buf = io.BytesIO()
            scipy.io.savemat(buf, {key: im})
            info = tarfile.TarInfo("data/cars/" + name)
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
            meshes[name] = im
    return meshes


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support; /truncated/NAME drops the connection half-way."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.split("/")[-1]
        f = Path(self.directory) / name
        if not f.is_file():
            self.send_error(404)
            return
        body = f.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.path.startswith("/truncated/"):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path.startswith("/truncated/"):
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    images, labels = _shapes3d_file(root / "3dshapes.h5")
    _shapes3d_file(root / "wrongkey.h5", key="imgs")
    norb = _smallnorb_files(root)
    meshes = _cars_tar(root / "nips2015-analogy-data.tar.gz")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            lambda *a, **k: _RangeHandler(*a, directory=str(root), **k))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "root": root, "sha": sha,
           "shapes": (images, labels), "norb": norb, "cars": meshes}
    httpd.shutdown()


# --------------------------------------------------------------------------- shapes3d
def test_shapes3d_fetch_and_index_order(server, tmp_path):
    out = tmp_path / "shapes3d.h5"
    path = fetch_dataset("shapes3d", out=out, url=server["url"] + "/3dshapes.h5", sha256=server["sha"]["3dshapes.h5"])
    ds = open_dataset("shapes3d", path)
    images, labels = server["shapes"]
    assert ds.image_shape == (3, 64, 64) and ds.num_images == len(images) and ds.bits_per_channel == 8
    assert ds.ground_truth.factor_sizes == SHAPES_SIZES
    idx = np.array([23, 0, 7, 7, 12])
    np.testing.assert_array_equal(ds.images(idx), images[idx].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    # index <-> classes: the official labels of row i are the values of classes_of(i)
    np.testing.assert_allclose(ds.ground_truth.values_of(ds.ground_truth.classes_of(np.arange(24))), labels)
    import torch
    np.testing.assert_array_equal(ds.torch_batch(idx, "cpu").numpy(), ds.images(idx))
    prov = ds.provenance
    assert prov["source_files"][0]["sha256"] == server["sha"]["3dshapes.h5"]
    assert prov["verified"] == {"3dshapes.h5": ["sha256"]}
    ds.verify()


def test_pinned_checksum_refuses_other_bytes(server, tmp_path):
    # the pinned size/sha256 are the real file's: the small file is refused, nothing written
    out = tmp_path / "shapes3d.h5"
    with pytest.raises(DatasetError, match="size mismatch.*nothing was written"):
        fetch_dataset("shapes3d", out=out, url=server["url"] + "/3dshapes.h5")
    assert list(tmp_path.rglob("*.h5*")) == []


@pytest.mark.parametrize("kind", ["checksum", "truncated", "layout"])
def test_fetch_refusals_write_nothing(server, tmp_path, kind):
    out = tmp_path / "shapes3d.h5"
    url, sha = server["url"] + "/3dshapes.h5", "0" * 64
    if kind == "truncated":
        url, sha = server["url"] + "/truncated/3dshapes.h5", server["sha"]["3dshapes.h5"]
    if kind == "layout":
        url, sha = server["url"] + "/wrongkey.h5", server["sha"]["wrongkey.h5"]
    result = CliRunner().invoke(main, ["data", "fetch", "shapes3d", "--url", url, "--sha256", sha, "--out", str(out)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output   # one line (beside the progress bar)
    message = errors[0]
    assert {"checksum": "checksum mismatch", "truncated": "truncated", "layout": "missing key 'images'"}[kind] in message
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".disentangle-download")]


def test_truncated_download_resumes(server, tmp_path):
    from disentangle.data.sources import SourceFile, download
    out = tmp_path / "3dshapes.h5"
    src = SourceFile("3dshapes.h5", sha256=server["sha"]["3dshapes.h5"])
    with pytest.raises(DatasetError, match="truncated"):
        download(server["url"] + "/truncated/3dshapes.h5", out, src)
    part = out.with_name(f".{out.name}.disentangle-download")
    assert part.is_file() and 0 < part.stat().st_size < (server["root"] / "3dshapes.h5").stat().st_size
    record = download(server["url"] + "/3dshapes.h5", out, src)   # Range request continues the .part
    assert record["verified"] == ["sha256"] and not part.exists()
    assert out.read_bytes() == (server["root"] / "3dshapes.h5").read_bytes()


def test_cli_fetch_info_and_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DISENTANGLE_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(main, ["data", "fetch", "shapes3d", "--file", str(server["root"] / "3dshapes.h5"),
                                  "--sha256", server["sha"]["3dshapes.h5"]])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "shapes3d.h5").is_file()
    for target in ("shapes3d", str(tmp_path / "shapes3d.h5")):
        r = CliRunner().invoke(main, ["data", "info", target])
        assert r.exit_code == 0, r.output
        assert "floor_hue=2" in r.output and "content_check:    verified" in r.output
    r = CliRunner().invoke(main, ["data", "info", "no-such-set"])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1


def test_damaged_file_refused(server, tmp_path):
    path = fetch_dataset("shapes3d", out=tmp_path / "s.h5", file=server["root"] / "3dshapes.h5",
                         sha256=server["sha"]["3dshapes.h5"])
    with h5py.File(path, "r+") as f:
        f["images"][3, 0, 0, 0] ^= 1
    with pytest.raises(DatasetError, match="content_sha256"):
        open_file(path).verify()


# --------------------------------------------------------------------------- mpi3d
def test_mpi3d_reshape_order_and_refusal(tmp_path):
    sizes = (2, 1, 2, 1, 1, 2, 3)
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (int(np.prod(sizes)), 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "mpi3d_toy.npz", images=images)
    path = mpi3d.convert_npz(tmp_path / "mpi3d_toy.npz", tmp_path / "m.h5", "mpi3d-toy", {"source": "official"},
                             factor_sizes=sizes)
    ds = open_dataset("mpi3d-toy", path)
    grid = images.reshape(list(sizes) + [64, 64, 3])         # the README's reshape
    for c in [(1, 0, 1, 0, 0, 1, 2), (0, 0, 0, 0, 0, 0, 1), (1, 0, 0, 0, 0, 1, 0)]:
        i = ds.ground_truth.index_of(np.array(c))
        np.testing.assert_array_equal(ds.read_uint8([i])[0], grid[c])
    # a file of another size (e.g. the old 460,800-image release) is refused before writing
    with pytest.raises(DatasetError, match=r"expected \(1036800, 64, 64, 3\).*nothing was written"):
        mpi3d.convert_npz(tmp_path / "mpi3d_toy.npz", tmp_path / "full.h5", "mpi3d-toy", {})
    assert not (tmp_path / "full.h5").exists()


# --------------------------------------------------------------------------- smallnorb
def test_smallnorb_fetch_grid_and_nuisance(server, tmp_path):
    from PIL import Image
    path = fetch_dataset("smallnorb", out=tmp_path / "smallnorb.h5", url=server["url"])
    ds = open_dataset("smallnorb", path)
    gt = ds.ground_truth
    assert gt.factor_names == ("category", "elevation", "azimuth", "lighting")
    assert gt.factor_sizes == (2, 2, 2, 2) and [n.size for n in gt.nuisance] == [2]
    assert ds.image_shape == (1, 64, 64) and ds.num_images == 32
    for (c, inst, e, a, l), left in server["norb"].items():
        i = gt.index_of(np.array([c, e, a // 2, l]), nuisance_classes=np.array([inst]))
        want = np.asarray(Image.fromarray(left).resize((64, 64), Image.LANCZOS)).astype(np.float32) / 255
        np.testing.assert_array_equal(ds.images([i])[0, 0], want)
        assert tuple(gt.classes_of(i)) == (c, e, a // 2, l) and tuple(gt.nuisance_classes_of(i)) == (inst,)
    # the instance is drawn uniformly per observation; the scored classes are kept
    classes = np.tile([[1, 0, 1, 1]], (4000, 1))
    idx = gt.index_of(classes, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(gt.classes_of(idx), classes)
    share = gt.nuisance_classes_of(idx)[:, 0].mean()
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / 4000)
    with pytest.raises(UserError, match="instance"):
        gt.index_of(classes)    # without a Generator the image is not determined


def test_smallnorb_wrong_magic_refused(tmp_path):
    _smallnorb_files(tmp_path, bad_magic=True)
    with pytest.raises(DatasetError, match="not a NORB binary matrix.*nothing was written"):
        fetch_dataset("smallnorb", out=tmp_path / "out.h5", file=tmp_path)
    assert not (tmp_path / "out.h5").exists()


# --------------------------------------------------------------------------- cars3d
def test_cars3d_sorted_objects_and_views(server, tmp_path):
    from PIL import Image
    path = fetch_dataset("cars3d", out=tmp_path / "cars3d.h5", url=server["url"] + "/nips2015-analogy-data.tar.gz",
                         md5=hashlib.md5((server["root"] / "nips2015-analogy-data.tar.gz").read_bytes()).hexdigest())
    ds = open_dataset("cars3d", path)
    gt = ds.ground_truth
    assert gt.factor_names == ("elevation", "azimuth", "object") and gt.factor_sizes == (4, 24, 2)
    assert ds.attrs["object_files"].split("\n") == ["car_a.mat", "car_b.mat"]   # sorted, not archive order
    for e, a, o in [(0, 0, 0), (3, 23, 1), (2, 5, 0), (1, 17, 1)]:
        im = server["cars"][["car_a.mat", "car_b.mat"][o]]
        pic = Image.fromarray(np.ascontiguousarray(im[:, :, :, a, e]))
        pic.thumbnail((64, 64), Image.LANCZOS)
        i = gt.index_of(np.array([e, a, o]))
        np.testing.assert_array_equal(ds.read_uint8([i])[0], np.asarray(pic))
    assert i == (1 * 24 + 17) * 2 + 1   # object fastest


def test_cars3d_wrong_key_refused(tmp_path):
    _cars_tar(tmp_path / "c.tar.gz", names=("x.mat",), key="images")
    with pytest.raises(DatasetError, match="no key 'im'.*nothing was written"):
        fetch_dataset("cars3d", out=tmp_path / "out.h5", file=tmp_path / "c.tar.gz", md5=hashlib.md5(
            (tmp_path / "c.tar.gz").read_bytes()).hexdigest())
    assert not (tmp_path / "out.h5").exists()


# --------------------------------------------------------------------------- registry, dsprites
def test_registry_and_dsprites_adapter(tiny_data_path, tiny_data):
    for name in datasets.REGISTRY:
        assert datasets.dataset_class(name).name == name
    with pytest.raises(UserError, match="unknown dataset"):
        open_dataset("mnist")
    ds = open_dataset("dsprites", tiny_data_path)
    assert ds.binary and ds.bits_per_channel == 1 and ds.image_shape == (1, 64, 64)
    idx = np.array([5, 1000, 3])
    np.testing.assert_array_equal(ds.images(idx)[:, 0], tiny_data.images(idx).astype(np.float32))
    np.testing.assert_array_equal(ds.torch_batch(idx, "cpu").numpy(), ds.images(idx))
    np.testing.assert_array_equal(ds.observations(idx, np.random.default_rng(0)), ds.images(idx))
    assert ds.provenance["content_sha256"] == tiny_data.provenance["content_sha256"]
    assert open_file(tiny_data_path).name == "dsprites"
