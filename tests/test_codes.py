"""The codes table (codes.h5) and the protocol-encode codes: what is encoded, when the
table is reused and when it is rebuilt, and bit-exact agreement of the two paths."""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from disentangle.errors import UserError
from disentangle.cli import user_message
from disentangle.devices import resolve_device
from disentangle.evaluation.codes import CODES_FORMAT, BatchEncoder, ProtocolCodes, codes_state, get_codes
from disentangle.io import file_sha256
from disentangle.rundir import load_model


def load_run_model(run_dir):
    return load_model(run_dir)[0]
from disentangle.io import read_json, write_json_atomic

from conftest import TINY_RUN_LATENT_DIM as LATENT_DIM  # the run_dir fixture's model


def encode_direct(model, images: np.ndarray):
    """Reference: the model applied to all images in one call, no batching machinery."""
    x = torch.from_numpy(images.astype(np.float32))[:, None]
    with torch.no_grad():
        mean, logvar = model.encode(x)
    return mean.numpy(), logvar.numpy()


def test_table_holds_encoder_mean_and_logvar_of_every_image(run_dir, tiny_data):
    codes = get_codes(run_dir, tiny_data, progress=False)
    assert codes.built and codes.mean.dtype == np.float32 and codes.logvar.dtype == np.float32
    assert codes.mean.shape == codes.logvar.shape == (tiny_data.num_images, LATENT_DIM)
    model = load_run_model(run_dir)
    want_mean, want_logvar = encode_direct(model, tiny_data.images(np.arange(tiny_data.num_images)))
    np.testing.assert_allclose(codes.mean, want_mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(codes.logvar, want_logvar, rtol=0, atol=1e-5)
    # a trained encoder tells images apart: the codes are not constant
    assert codes.mean.std(axis=0).max() > 1e-3

    with h5py.File(run_dir / "codes.h5", "r") as f:
        attrs = dict(f.attrs)
        np.testing.assert_array_equal(f["mean"][...], codes.mean)
        np.testing.assert_array_equal(f["logvar"][...], codes.logvar)
    assert attrs["format"] == CODES_FORMAT
    assert attrs["model_sha256"] == file_sha256(run_dir / "model.pt")
    assert attrs["data_content_sha256"] == tiny_data.provenance["content_sha256"]
    assert attrs["latent_dim"] == LATENT_DIM and attrs["num_images"] == tiny_data.num_images
    assert '"rendered"' in attrs["data_provenance"]


def test_fresh_table_is_reused_without_encoding(run_dir, tiny_data, tiny_data_path, monkeypatch):
    first = get_codes(run_dir, tiny_data, progress=False)
    stamp = (run_dir / "codes.h5").stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("a fresh table must not be re-encoded")
    monkeypatch.setattr("disentangle.evaluation.codes.encode_dataset", no_encoding)
    again = get_codes(run_dir, tiny_data, progress=False)
    assert not again.built and codes_state(run_dir, tiny_data) == "fresh"
    np.testing.assert_array_equal(again.mean, first.mean)
    np.testing.assert_array_equal(again.logvar, first.logvar)
    by_path = get_codes(run_dir, str(tiny_data_path), progress=False)   # a path works too
    assert not by_path.built
    np.testing.assert_array_equal(by_path.mean, first.mean)
    assert (run_dir / "codes.h5").stat().st_mtime_ns == stamp


def _replace_model(run_dir: Path, scale: float) -> None:
    """Simulate retraining: new weights in model.pt, and the checksum training records."""
    path = run_dir / "model.pt"
    state = torch.load(path, weights_only=True)
    state = {k: v * scale if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, path)
    status = read_json(run_dir / "status.json")
    status["model_sha256"] = file_sha256(path)
    write_json_atomic(run_dir / "status.json", status)


def test_changed_model_rebuilds_the_table(run_dir, tiny_data):
    old = get_codes(run_dir, tiny_data, progress=False)
    _replace_model(run_dir, 1.5)
    assert codes_state(run_dir, tiny_data) == "stale: model.pt changed"
    new = get_codes(run_dir, tiny_data, progress=False)
    assert new.built and new.model_sha256 == file_sha256(run_dir / "model.pt") != old.model_sha256
    assert not np.allclose(new.mean, old.mean)
    assert get_codes(run_dir, tiny_data, progress=False).built is False


def test_changed_data_rebuilds_the_table(run_dir, tiny_data, tiny_ground_truth, tmp_path):
    from disentangle.data.dsprites import DSpritesData, render_dataset
    get_codes(run_dir, tiny_data, progress=False)
    # same grid size, other orientations: other pixels, other content checksum
    other_gt = tiny_ground_truth.__class__.dsprites().subgrid(
        {"scale": [0, 5], "orientation": [1, 6, 11, 16], "pos_x": range(0, 32, 4), "pos_y": range(0, 32, 4)})
    other = DSpritesData(render_dataset(tmp_path / "other.h5", other_gt))
    assert other.provenance["content_sha256"] != tiny_data.provenance["content_sha256"]
    assert codes_state(run_dir, other) == "stale: dataset changed"
    codes = get_codes(run_dir, other, progress=False)
    assert codes.built and codes.data_content_sha256 == other.provenance["content_sha256"]
    model = load_run_model(run_dir)
    want, _ = encode_direct(model, other.images(np.arange(other.num_images)))
    np.testing.assert_allclose(codes.mean, want, atol=1e-5)
    # and back: the original data is stale again, and rebuilt
    assert codes_state(run_dir, tiny_data) == "stale: dataset changed"
    assert get_codes(run_dir, tiny_data, progress=False).built


def test_damaged_table_is_rebuilt(run_dir, tiny_data):
    (run_dir / "codes.h5").write_bytes(b"not an hdf5 file")
    assert codes_state(run_dir, tiny_data).startswith("stale: unreadable")
    codes = get_codes(run_dir, tiny_data, progress=False)
    assert codes.built and codes_state(run_dir, tiny_data) == "fresh"


def test_protocol_codes_are_bit_identical_to_the_table(run_dir, tiny_data):
    table = get_codes(run_dir, tiny_data, progress=False)
    model = load_run_model(run_dir)
    lazy = ProtocolCodes(model, tiny_data, "cpu")
    assert lazy.shape == table.mean.shape and lazy.ndim == 2 and len(lazy) == tiny_data.num_images
    rng = np.random.default_rng(3)
    total = 0
    for n in (1, 7, 63, 64, 65, 200):   # partial batches, exact batches, repeats
        idx = rng.integers(0, tiny_data.num_images, size=n)
        got = lazy[idx]
        assert got.dtype == np.float32 and got.shape == (n, LATENT_DIM)
        np.testing.assert_array_equal(got, table.mean[idx])
        total += n
    assert lazy.images_encoded == total and lazy.calls == 6
    grid = rng.integers(0, tiny_data.num_images, size=(3, 5))
    np.testing.assert_array_equal(lazy[grid], table.mean[grid])
    np.testing.assert_array_equal(lazy[10:20], table.mean[10:20])
    with pytest.raises(IndexError):
        lazy[np.array([tiny_data.num_images])]


def test_an_image_code_does_not_depend_on_its_batch_neighbours(run_dir, tiny_data):
    model = load_run_model(run_dir)
    packed = tiny_data.packed
    encoder = BatchEncoder(model, "cpu", batch_size=16)
    alone = np.concatenate([encoder.encode_packed(packed[i:i + 1], want_logvar=False) for i in range(40)])
    together = encoder.encode_packed(packed[:40], want_logvar=False)
    shuffled_order = np.random.default_rng(0).permutation(40)
    shuffled = encoder.encode_packed(packed[:40][shuffled_order], want_logvar=False)
    np.testing.assert_array_equal(alone, together)
    np.testing.assert_array_equal(shuffled, together[shuffled_order])
    # another batch size runs other kernels: equal to float32 rounding, not necessarily bitwise
    other = BatchEncoder(model, "cpu", batch_size=5).encode_packed(packed[:40], want_logvar=False)
    np.testing.assert_allclose(other, together, rtol=0, atol=1e-5)


def test_missing_run_or_model_is_a_user_error(tmp_path, tiny_data):
    with pytest.raises(UserError, match="no such run directory"):
        get_codes(tmp_path / "nope", tiny_data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no model.pt"):
        get_codes(tmp_path / "empty", tiny_data)


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    # the library names the parameter, the CLI prints it as the flag
    with pytest.raises(UserError) as info:
        resolve_device("tpu")
    assert re.search("--device", user_message(info.value))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")


def test_default_batch_size_by_device_type():
    import torch

    from disentangle.evaluation.codes import DEFAULT_CPU_BATCH, DEFAULT_CUDA_BATCH, default_batch_size
    assert DEFAULT_CPU_BATCH < DEFAULT_CUDA_BATCH
    assert default_batch_size("cpu") == default_batch_size(torch.device("cpu")) == DEFAULT_CPU_BATCH
    assert (default_batch_size("cuda") == default_batch_size("cuda:1") == default_batch_size(torch.device("cuda", 0))
            == DEFAULT_CUDA_BATCH)


def test_device_side_unpack_gives_the_dataset_pixels(tiny_data):
    import torch

    from disentangle.data.render import unpack_to_float
    rows = np.random.default_rng(0).integers(0, 256, size=(37, 512), dtype=np.uint8)
    got = unpack_to_float(torch.from_numpy(rows))
    assert got.dtype == torch.float32 and got.shape == (37, 1, 64, 64)
    assert np.array_equal(got[:, 0].numpy(), np.unpackbits(rows, axis=1).reshape(37, 64, 64).astype(np.float32))
    idx = np.arange(0, tiny_data.num_images, 7)
    assert np.array_equal(unpack_to_float(torch.from_numpy(tiny_data.packed_images(idx)))[:, 0].numpy(),
                          tiny_data.images(idx).astype(np.float32))
