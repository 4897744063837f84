"""Issue 22, "nothing on disk is trusted without a check", for the toolkit's image-set
files (ImageFile): their images are hashed against the recorded content_sha256 before
first use, once per file state (path, device, inode, size, mtime_ns), the verdict kept in
the toolkit's cache folder so a later process (a sweep worker, a Slurm task) skips the hash.

The file is a tiny MPI3D-layout set converted by the MPI3D converter (24 images)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from disentangle.cli import main as cli
from disentangle.data import mpi3d, trust
from disentangle.data.datasets import DatasetError, open_dataset, open_file
from disentangle.data.dsprites import DSpritesData
from disentangle.io import CACHE_ENV_VAR

SIZES = (2, 1, 2, 1, 1, 2, 3)   # a sub-grid of MPI3D: 24 images
_TRAIN = ["--steps", "3", "--batch-size", "8", "--latent-dim", "3", "--threads", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache folder, and no verdict remembered in this process."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(folder))
    monkeypatch.setattr(trust, "_HASHED", {})
    return folder


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """Bytes hashed by ContentDigest (every content check goes through it)."""
    counted = [0]
    update = trust.ContentDigest.update

    def counting(self, block):
        counted[0] += np.asarray(block).nbytes
        update(self, block)
    monkeypatch.setattr(trust.ContentDigest, "update", counting)
    return counted


def _image_set(folder: Path) -> Path:
    images = np.random.default_rng(4).integers(0, 256, (int(np.prod(SIZES)), 64, 64, 3), dtype=np.uint8)
    np.savez(folder / "mpi3d_toy.npz", images=images)
    return mpi3d.convert_npz(folder / "mpi3d_toy.npz", folder / "m.h5", "mpi3d-toy", {"source": "official"},
                             factor_sizes=SIZES)


def _flip_bit(path: Path, index: int = 5) -> None:
    with h5py.File(path, "r+") as f:
        f["images"][index, 10, 20, 1] ^= 0b100


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_recorded_checksum_is_the_one_the_check_computes(tmp_path):
    """ContentDigest (the writers' and the checks' one definition) is sha256 of /images in
    index order, computed here independently with hashlib."""
    path = _image_set(tmp_path)
    with h5py.File(path, "r") as f:
        assert f.attrs["content_sha256"] == hashlib.sha256(f["images"][...].tobytes()).hexdigest()


def test_a_flipped_bit_is_refused_by_train_evaluate_score_before_writing(tmp_path):
    path = _image_set(tmp_path)
    data = ["--dataset", "mpi3d-toy", "--data", path]
    result = _invoke("train", "--out", tmp_path / "run", *data, *_TRAIN)
    assert result.exit_code == 0, result.output
    np.savez(tmp_path / "codes.npz", codes=np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32))
    _flip_bit(path)   # the checksum attribute is left as it was
    with h5py.File(path, "r") as f:
        assert f.attrs["content_sha256"] != hashlib.sha256(f["images"][...].tobytes()).hexdigest()
    run_before = _tree(tmp_path / "run")
    for args, out in ((["train", "--out", tmp_path / "new", *data, *_TRAIN], tmp_path / "new"),
                      (["evaluate", tmp_path / "run", "--metric", "mig", "--data", path], None),
                      (["score", tmp_path / "codes.npz", "--out", tmp_path / "scored", *data, "--metric", "mig"],
                       tmp_path / "scored"),
                      # --unverified-data covers files WITHOUT a checksum; a wrong one is always refused
                      (["train", "--out", tmp_path / "new", *data, *_TRAIN, "--unverified-data"], tmp_path / "new")):
        line = _one_line(_invoke(*args))
        assert (f"{path}: images do not match the file's content_sha256" in line
                and "re-create it with `disentangle data fetch mpi3d-toy`" in line), line
        assert out is None or not out.exists(), args
        assert _tree(tmp_path / "run") == run_before, args   # no codes.h5, scores.json, lock, progress
    with pytest.raises(DatasetError, match="images do not match"):
        open_dataset("mpi3d-toy", path)


def test_an_image_folder_refusal_names_its_import_command(tmp_path):
    from PIL import Image

    from disentangle.data.image_folder import import_folder
    (tmp_path / "pics").mkdir()
    for k in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 * k, np.uint8)).save(tmp_path / "pics" / f"{k}.png")
    path, _ = import_folder(tmp_path / "pics", name="pics", out=tmp_path / "pics.h5")
    _flip_bit(path, index=1)
    with pytest.raises(DatasetError, match=r"re-create it with `disentangle data import-folder \S*pics --name pics`"):
        open_file(path)


def test_an_intact_file_is_hashed_once_across_processes(tmp_path, cache, hashed):
    path = _image_set(tmp_path)
    hashed[0] = 0
    open_file(path).close()
    images_bytes = 24 * 64 * 64 * 3
    assert hashed[0] == images_bytes   # the first open reads every image once
    entry = json.loads(next((cache / "verified").iterdir()).read_text())
    st = path.stat()
    assert entry["states"][0] | {"hashed_seconds": 0, "hashed_at": ""} == {
        "path": str(path.resolve()), "device": st.st_dev, "inode": st.st_ino, "size": st.st_size,
        "mtime_ns": st.st_mtime_ns, "content_sha256": h5py.File(path, "r").attrs["content_sha256"],
        "hashed_seconds": 0, "hashed_at": ""}
    trust._HASHED.clear()   # as a new process: only the cache folder remembers
    ds = open_file(path)
    assert hashed[0] == images_bytes and not ds._hashed_at_open
    ds.close()
    # another process (a sweep worker) sees the same cache: no hash there either
    code = ("import sys; from disentangle.data.datasets import open_file; "
            "ds = open_file(sys.argv[1]); print('hashed' if ds._hashed_at_open else 'cached')")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env={**os.environ, CACHE_ENV_VAR: str(cache)}, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "cached", (out.stdout, out.stderr)


def test_a_changed_file_state_is_hashed_again(tmp_path, hashed):
    path = _image_set(tmp_path)
    open_file(path).close()
    trust._HASHED.clear()
    hashed[0] = 0
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # touched: contents unknown
    open_file(path).close()
    assert hashed[0] == 24 * 64 * 64 * 3
    # the corruption a touch could hide is caught the same way
    _flip_bit(path)
    with pytest.raises(DatasetError, match="images do not match"):
        open_file(path)


def test_data_info_hashes_in_full_whatever_the_cache_says(tmp_path, hashed):
    """A cached verdict is a shortcut for train/evaluate/score; `data info` re-reads the
    images (here: a bit flipped with the mtime put back, which the cache cannot see)."""
    path = _image_set(tmp_path)
    open_file(path).close()
    st = path.stat()
    _flip_bit(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashed[0] = 0
    open_file(path).close()            # same state: the remembered verdict, nothing read
    assert hashed[0] == 0
    line = _one_line(_invoke("data", "info", path))
    assert "images do not match the file's content_sha256" in line, line


@pytest.mark.parametrize("damage", ["garbage", "truncated", "directory", "wrong types", "a false verdict"])
def test_a_damaged_cache_only_costs_a_rehash(tmp_path, cache, hashed, damage):
    path = _image_set(tmp_path)
    open_file(path).close()
    (cache_file,) = (cache / "verified").iterdir()
    text = cache_file.read_text()
    cache_file.unlink()
    if damage == "garbage":
        cache_file.write_bytes(b"\x00\xffnot json{{{")
    elif damage == "truncated":
        cache_file.write_text(text[: len(text) // 2])
    elif damage == "directory":
        cache_file.mkdir()
    elif damage == "wrong types":
        cache_file.write_text(json.dumps({"format": trust.CONTENT_CACHE_FORMAT, "states": [5, {"path": [1]}, None]}))
    else:   # an entry for this very state claiming other content: never a false refusal
        saved = json.loads(text)
        saved["states"][0]["content_sha256"] = "0" * 64
        cache_file.write_text(json.dumps(saved))
    trust._HASHED.clear()
    hashed[0] = 0
    ds = open_file(path)
    assert ds._hashed_at_open and hashed[0] == 24 * 64 * 64 * 3 and ds.content_sha256 == json.loads(text)[
        "states"][0]["content_sha256"]
    ds.close()
    trust._HASHED.clear()
    result = _invoke("train", "--out", tmp_path / "run", "--dataset", "mpi3d-toy", "--data", path, *_TRAIN)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_the_cache_keeps_the_states_of_several_hosts(tmp_path, cache):
    """A file on a shared file system can show another st_dev on each host: each host's
    state is kept beside the others' (bounded), so each stays a hit."""
    path = _image_set(tmp_path)
    open_file(path).close()
    state = trust.file_state(path)
    sha = trust.cached_content_sha256(state)
    others = [(state[0], 1000 + k, *state[2:]) for k in range(trust._CACHE_STATES + 3)]
    for other in others:
        trust._remember(other, sha, 0.1)
    trust._HASHED.clear()
    assert trust.cached_content_sha256(others[-1]) == sha
    assert trust.cached_content_sha256(others[-trust._CACHE_STATES]) == sha
    assert trust.cached_content_sha256(state) is None   # the oldest fell out: bounded


def test_dsprites_uses_the_same_cache(tiny_data_path, hashed):
    DSpritesData(tiny_data_path)
    trust._HASHED.clear()
    hashed[0] = 0
    DSpritesData(tiny_data_path)
    assert hashed[0] == 0
    DSpritesData(tiny_data_path, verify=True)   # `data info`: in full
    assert hashed[0] == 1536 * 512


def test_the_raw_block_reader_yields_the_images_bytes_in_index_order(tmp_path):
    """The fast reader (chunk bytes straight from the file) and HDF5's reads agree."""
    path = _image_set(tmp_path)
    ds = open_file(path)
    try:
        runs = ds._raw_runs(block_bytes=5 * 64 * 64 * 3)
        assert runs is not None and len(runs) >= 5   # split into blocks of 5 images
        raw = b"".join(np.asarray(b).tobytes() for b in ds._image_blocks())
        assert raw == ds._images[...].tobytes()
        ds._raw = False                                  # the HDF5 path
        assert b"".join(np.asarray(b).tobytes() for b in ds._image_blocks()) == raw
    finally:
        ds.close()


def test_a_sweep_checks_the_file_once_before_its_runs(tmp_path, hashed):
    """locate (what the sweep calls before starting runs) checks an image set's images, so
    the workers it starts find the verdict; a damaged file stops the sweep before any run."""
    from disentangle.data.datasets import locate
    path = _image_set(tmp_path)
    hashed[0] = 0
    assert locate("mpi3d-toy", path)[1] == h5py.File(path, "r").attrs["content_sha256"]
    assert hashed[0] == 24 * 64 * 64 * 3
    trust._HASHED.clear()
    assert not open_file(path)._hashed_at_open
    _flip_bit(path)
    line = _one_line(_invoke("sweep", "--results", tmp_path / "study", "--dataset", "mpi3d-toy", "--data", path,
                             "--beta", "1", "--seeds", "0", "--steps", "3", "--device", "cpu"))
    assert "images do not match the file's content_sha256" in line, line
    assert not (tmp_path / "study").exists() or not any((tmp_path / "study").rglob("config.json"))


def test_a_large_file_shows_a_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    import io

    from disentangle import progress
    path = _image_set(tmp_path)
    err = io.StringIO()
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(trust, "_BAR_MIN_BYTES", 1)     # this tiny file counts as large
    reported = []
    with progress.reporting(lambda *entry: reported.append(entry)):
        open_file(path).close()
    assert "checking m.h5" in err.getvalue() and "100%" in err.getvalue(), err.getvalue()
    assert reported[-1] == ("checking data", 24 * 64 * 64 * 3, 24 * 64 * 64 * 3, "bytes")
    monkeypatch.setattr(trust, "_BAR_MIN_BYTES", 1 << 40)   # a small file: no bar
    err.truncate(0)
    trust._HASHED.clear()
    open_file(path).verify()
    assert "checking" not in err.getvalue()
