"""Dataset files: HDF5 round trip, the dataset rule, and fetching the official npz
from a local HTTP server (success and every error case)."""
import hashlib
import http.server
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from disentangle.cli import main
from disentangle.data import dsprites
from disentangle.data.dsprites import DataError, DSpritesData, fetch_official, resolve_data_path
from disentangle.data.ground_truth import GroundTruth
from disentangle.data.render import render_images, unpack_images


# ----------------------------------------------------------------------------- HDF5 files
def test_rendered_file_round_trip(tiny_data, tiny_ground_truth):
    assert tiny_data.ground_truth == tiny_ground_truth
    assert tiny_data.num_images == 1536
    assert tiny_data.source == "rendered"
    prov = tiny_data.provenance
    assert prov["renderer_version"] and len(prov["content_sha256"]) == 64
    idx = np.array([0, 1, 700, 1535])
    np.testing.assert_array_equal(tiny_data.images(idx),
                                  render_images(tiny_ground_truth, tiny_ground_truth.classes_of(idx)))
    # content hash is the sha256 of the packed images
    assert hashlib.sha256(tiny_data.packed.tobytes()).hexdigest() == prov["content_sha256"]
    with h5py.File(tiny_data.path) as f:
        classes = f["latents_classes"][...]
        values = f["latents_values"][...]
    assert classes.shape == (1536, 6) and np.all(classes[:, 0] == 0)
    # official class numbers of the sub-grid, and their values
    np.testing.assert_array_equal(np.unique(classes[:, 3]), [0, 5, 10, 15])
    np.testing.assert_allclose(values[:, 2], tiny_ground_truth.values_of(tiny_ground_truth.all_classes())[:, 1])


def test_not_a_dataset_file(tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = 1
    with pytest.raises(DataError, match="not a disentangle dSprites file"):
        DSpritesData(bad)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"hello")
    with pytest.raises(DataError, match="unreadable"):
        DSpritesData(junk)


def test_dataset_rule(tmp_path, monkeypatch, tiny_data_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(dsprites.DATA_ENV_VAR, raising=False)
    with pytest.raises(DataError, match="no dataset found"):
        resolve_data_path()
    assert resolve_data_path("x.h5") == Path("x.h5")
    Path("data").mkdir()
    Path("data/dsprites-rendered.h5").write_bytes(b"")
    assert resolve_data_path() == Path("data/dsprites-rendered.h5")
    Path("data/dsprites.h5").write_bytes(b"")
    assert resolve_data_path() == Path("data/dsprites.h5")  # official first
    monkeypatch.setenv(dsprites.DATA_ENV_VAR, str(tiny_data_path))
    assert resolve_data_path() == tiny_data_path
    assert resolve_data_path("explicit.h5") == Path("explicit.h5")


# ----------------------------------------------------------------------------- official npz
SMALL_GRID = {"scale": [0, 5], "orientation": [0, 20], "pos_x": [0, 31], "pos_y": [0, 9, 31]}


def _write_official_npz(path, gt, **override):
    """A small file in the official npz format (keys, dtypes, pickled metadata)."""
    classes = gt.all_classes()
    official = np.stack([gt.official_classes[k][classes[:, k]] for k in range(5)], axis=1)
    arrays = {
        "imgs": render_images(gt, classes),
        "latents_classes": np.concatenate([np.zeros((len(classes), 1), np.int64), official], axis=1),
        "latents_values": np.concatenate([np.ones((len(classes), 1)), gt.values_of(classes)], axis=1),
        "metadata": np.array({"title": "dSprites dataset", "latents_sizes": np.array([1, 3, 6, 40, 32, 32])},
                             dtype=object),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # connection drops mid-transfer
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    gt = GroundTruth.dsprites().subgrid(SMALL_GRID)
    _write_official_npz(root / "good.npz", gt)
    _write_official_npz(root / "nokey.npz", gt, latents_classes=None)
    _write_official_npz(root / "badshape.npz", gt, imgs=np.zeros((5, 64, 64), np.uint8))
    _write_official_npz(root / "notgrid.npz", gt, latents_classes=np.zeros((gt.num_images, 6), np.int64))
    good = (root / "good.npz").read_bytes()
    (root / "cut.npz").write_bytes(good[: len(good) * 2 // 3])  # a truncated file, served whole

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in root.glob("*.npz")}
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "md5": md5, "gt": gt, "root": root}
    httpd.shutdown()


def test_fetch_converts_official_format(server, tmp_path):
    out = tmp_path / "dsprites.h5"
    path = fetch_official(out, url=server["url"] + "/good.npz", md5=server["md5"]["good.npz"])
    data = DSpritesData(path)
    assert data.source == "official"
    assert data.provenance["source_checksum"] == "md5:" + server["md5"]["good.npz"]
    assert data.ground_truth == server["gt"]
    with np.load(server["root"] / "good.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(unpack_images(data.packed), z["imgs"])
    assert data.attrs["pos_y_top"]  # posY class 0 sits in the top rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dsprites.h5"]  # npz removed, no temp files


@pytest.mark.parametrize("name,md5,message", [
    ("good.npz", "0" * 32, "checksum mismatch"),
    ("nokey.npz", None, "missing key 'latents_classes'"),
    ("badshape.npz", None, "imgs has shape"),
    ("notgrid.npz", None, "not a complete factor grid"),
    ("cut.npz", None, "npz"),
    ("missing.npz", "0" * 32, "download failed"),
])
def test_fetch_errors_leave_nothing(server, tmp_path, name, md5, message):
    out = tmp_path / "dsprites.h5"
    with pytest.raises(DataError, match=message):
        fetch_official(out, url=server["url"] + "/" + name, md5=md5 or server["md5"][name])
    assert list(tmp_path.iterdir()) == []


def test_fetch_truncated_transfer(server, tmp_path):
    with pytest.raises(DataError, match="truncated"):
        fetch_official(tmp_path / "d.h5", url=server["url"] + "/truncated/good.npz",
                       md5=server["md5"]["good.npz"])
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_failed_fetch(server, tmp_path):
    out = tmp_path / "dsprites.h5"
    out.write_bytes(b"precious")
    with pytest.raises(DataError):
        fetch_official(out, url=server["url"] + "/good.npz", md5="f" * 32)
    assert out.read_bytes() == b"precious"


def test_cli_fetch_and_info(server, tmp_path):
    runner = CliRunner()
    out = tmp_path / "d.h5"
    ok = runner.invoke(main, ["data", "fetch", "--url", server["url"] + "/good.npz",
                              "--md5", server["md5"]["good.npz"], "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    info = runner.invoke(main, ["data", "info", str(out)])
    assert info.exit_code == 0
    assert "official" in info.output and "num_images:       72" in info.output
    bad = runner.invoke(main, ["data", "fetch", "--url", server["url"] + "/good.npz",
                               "--md5", "0" * 32, "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code != 0
    # progress bars aside (stderr), the failure is one line
    lines = [l for l in bad.output.splitlines() if l.strip() and not l.startswith("download:")]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "checksum mismatch" in lines[0]
    assert "Traceback" not in bad.output
    missing = runner.invoke(main, ["data", "info", str(tmp_path / "nope.h5")])
    assert missing.exit_code != 0 and "nope.h5" in missing.output


def test_cli_renders_a_sub_grid(tmp_path):
    """`data render --keep`: a sub-grid straight from the command line (the CPU study's
    data), the same images as the full grid's rows for those classes."""
    out = tmp_path / "sub.h5"
    result = CliRunner().invoke(main, ["data", "render", "--out", str(out), "--keep", "orientation=0:40:20",
                                       "--keep", "pos_x=3", "--keep", "pos_y=4,5"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (72 images, rendered)" in result.output
    gt = GroundTruth.dsprites().subgrid({"orientation": [0, 20], "pos_x": [3], "pos_y": [4, 5]})
    data = DSpritesData(out)
    assert data.ground_truth.factor_sizes == (3, 6, 2, 1, 2)
    np.testing.assert_array_equal(data.images(np.arange(72)), render_images(gt, gt.all_classes()))
    for bad, message in ((["--keep", "orientation"], "--keep 'orientation': expected FACTOR="),
                         (["--keep", "orientation=0:99"], "orientation has classes 0 to 39; need 0 <= START < STOP <= 40"),
                         (["--keep", "hue=1"], "unknown factor 'hue'"),
                         (["--keep", "pos_x=1", "--keep", "pos_x=2"], "factor 'pos_x' given twice")):
        result = CliRunner().invoke(main, ["data", "render", "--out", str(tmp_path / "bad.h5"), *bad])
        assert result.exit_code != 0 and message in result.output, (bad, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "bad.h5").exists()


def test_cli_render_small(tmp_path, monkeypatch):
    # `data render` renders the full grid (737,280 images); the grid it asks for is swapped
    # for a 36-image sub-grid, so the command itself runs end to end at test size
    gt = GroundTruth.dsprites().subgrid({"orientation": [0], "pos_x": [3], "pos_y": [4, 5]})
    monkeypatch.setattr(GroundTruth, "dsprites", classmethod(lambda cls: gt))
    out = tmp_path / "r.h5"
    for flags, pos_y_top in (([], True), (["--pos-y-bottom"], False)):
        result = CliRunner().invoke(main, ["data", "render", "--out", str(out)] + flags)
        assert result.exit_code == 0, result.output
        assert f"wrote {out} (36 images, rendered)" in result.output
        info = dsprites.dataset_info(out)
        assert info["num_images"] == 36 and info["source"].startswith("rendered")
        data = DSpritesData(out)
        np.testing.assert_array_equal(data.images(np.arange(36)),
                                      render_images(gt, gt.all_classes(), pos_y_top=pos_y_top))
    # the two conventions differ (posY 4 and 5 are not mirror images of each other)
    assert not np.array_equal(render_images(gt, gt.all_classes(), pos_y_top=True),
                              render_images(gt, gt.all_classes(), pos_y_top=False))
