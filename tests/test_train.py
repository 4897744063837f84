"""The training loop on the tiny rendered dataset: learning, logs, determinism, exact
resume after SIGKILL, refusals, divergence, and loading models back."""
from __future__ import annotations

import csv
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from disentangle.cli import user_message
from disentangle.config import TrainConfig
from disentangle.errors import UserError
from disentangle.io import read_json
from disentangle.rundir import RunDir, load_model
from disentangle.train import PackedBatches, TrainingDiverged, train

REPO = Path(__file__).resolve().parents[1]


def small(tiny_data_path, **kw) -> TrainConfig:
    """A short, one-thread run on the tiny dataset; batch 16 keeps steps cheap."""
    base = dict(beta=4.0, steps=20, batch_size=16, seed=0, data=str(tiny_data_path), device="cpu",
                threads=1, log_every=5, checkpoint_every=10)
    base.update(kw)
    return TrainConfig(**base)


def weights(run_dir) -> dict:
    return torch.load(Path(run_dir) / "model.pt", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def read_log(run_dir) -> list[dict]:
    with open(Path(run_dir) / "train_log.csv") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data_path):
    out = tmp_path_factory.mktemp("runs") / "b4"
    return train(small(tiny_data_path), out), small(tiny_data_path)


# --------------------------------------------------------------------------- data path
def test_batches_unpack_exactly_the_dataset_images(tiny_data):
    batches = PackedBatches(tiny_data.packed, "cpu", seed=5)
    idx = batches.indices(32)
    got = batches.images(idx)
    assert got.dtype == torch.float32 and got.shape == (32, 1, 64, 64)
    np.testing.assert_array_equal(got[:, 0].numpy().astype(np.uint8), tiny_data.images(idx.numpy()))
    again = PackedBatches(tiny_data.packed, "cpu", seed=5).indices(32)
    assert torch.equal(idx, again)
    assert int(idx.max()) < tiny_data.num_images


# --------------------------------------------------------------------------- learning and logs
def test_loss_decreases_and_kl_per_dimension_sums_to_kl(tmp_path, tiny_data_path):
    run = train(small(tiny_data_path, steps=60, log_every=20, checkpoint_every=60, lr=3e-3, beta=1.0),
                tmp_path / "learn")
    log = read_log(run)
    assert [r["step"] for r in log] == [20, 40, 60]
    first, last = log[0], log[-1]
    # from ~2,000 nats (mostly pixels near chance) to a third of that within 60 steps
    assert last["reconstruction"] < 0.5 * first["reconstruction"]
    assert last["loss"] < first["loss"]
    for row in log:
        kl_dims = [row[f"kl_{i}"] for i in range(10)]
        assert min(kl_dims) >= 0
        assert sum(kl_dims) == pytest.approx(row["kl"], rel=1e-6, abs=1e-9)
        assert row["loss"] == pytest.approx(row["reconstruction"] + 1.0 * row["kl"], rel=1e-6)
        assert row["img_per_s"] > 0


def test_run_directory_contract(finished_run):
    run, config = finished_run
    assert {"config.json", "checkpoint.pt", "model.pt", "train_log.csv", "status.json"} <= \
        {p.name for p in run.iterdir()}
    saved = read_json(run / "config.json")
    assert saved["config"] == config.to_dict()
    assert saved["data"]["source"] == "rendered" and saved["data"]["renderer_version"]
    assert saved["package"]["disentangle"]
    status = read_json(run / "status.json")
    assert status["state"] == "finished" and status["step"] == 20 and status["reason"] is None
    assert RunDir(run).training_finished()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]   # no temp files left


def test_beta_b_logs_the_capacity_schedule(tmp_path, tiny_data_path):
    config = small(tiny_data_path, method="beta-b", gamma=100.0, capacity_max=10.0, capacity_steps=10,
                   steps=15, log_every=5, checkpoint_every=15)
    log = read_log(train(config, tmp_path / "bb"))
    # logged C is the value used at the last step of the interval (0-based step 4, 9, 14)
    assert [r["capacity"] for r in log] == pytest.approx([4.0, 9.0, 10.0])
    for r in log:
        assert r["loss"] == pytest.approx(r["reconstruction"] + 100.0 * abs(r["kl"] - r["capacity"]), rel=1e-3) \
            or r["loss"] >= r["reconstruction"]   # (interval means: |KL − C| averages ≥ |mean KL − C|)


def test_gaussian_likelihood_trains(tmp_path, tiny_data_path):
    run = train(small(tiny_data_path, likelihood="gaussian", steps=10, checkpoint_every=10), tmp_path / "g")
    model, cfg = load_model(run)
    assert cfg["likelihood"] == "gaussian" and model.likelihood == "gaussian"
    log = read_log(run)
    assert all(0 < r["reconstruction"] < 4096 for r in log)   # squared errors of values in [0, 1]


# --------------------------------------------------------------------------- determinism and resume
def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_data_path, finished_run):
    run, config = finished_run
    again = train(small(tiny_data_path), tmp_path / "again")
    assert same_weights(weights(run), weights(again))
    assert read_log(run)[-1]["loss"] == read_log(again)[-1]["loss"]
    other = train(small(tiny_data_path, seed=1), tmp_path / "other")
    assert not same_weights(weights(run), weights(other))


def test_bf16_mixed_precision_is_deterministic_and_tracks_float32(tmp_path, tiny_data_path, finished_run):
    run, _ = finished_run
    config = small(tiny_data_path, precision="bf16-mixed", steps=10, checkpoint_every=10)
    a, b = train(config, tmp_path / "a"), train(config, tmp_path / "b")
    assert same_weights(weights(a), weights(b))
    # same batches and noise as the float32 run's first 10 steps: same losses to ~1%
    for mixed, full in zip(read_log(a), read_log(run)[:2]):
        assert mixed["step"] == full["step"]
        assert mixed["loss"] == pytest.approx(full["loss"], rel=1e-2)
        assert mixed["loss"] != full["loss"]   # it did run in bfloat16


@pytest.mark.parametrize("method", [
    {},
    # FactorVAE on dlib's network: the discriminator, its Adam and the shuffle generator resume too
    {"method": "factor-vae", "gamma": 10.0, "architecture": "dlib"},
    {"method": "beta-tcvae", "beta": 6.0},
], ids=["beta-h", "factor-vae-dlib", "beta-tcvae"])
def test_sigkill_mid_run_then_rerun_gives_bit_identical_weights(tmp_path, tiny_data_path, method):
    steps = 30 if method else 60   # the new methods: fewer steps, still killed after a checkpoint
    settings = method or {"beta": 4.0}
    reference = train(small(tiny_data_path, steps=steps, checkpoint_every=7, **settings), tmp_path / "ref")
    out = tmp_path / "killed"
    options = [a for k, v in settings.items() for a in ("--" + k.replace("_", "-"), str(v))]
    cmd = [sys.executable, "-m", "disentangle", "train", *options, "--steps", str(steps),
           "--batch-size", "16", "--seed", "0", "--data", str(tiny_data_path), "--device", "cpu",
           "--threads", "1", "--log-every", "5", "--checkpoint-every", "7", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        # kill once a checkpoint beyond the first exists, while the run is still going
        while time.monotonic() < deadline and proc.poll() is None:
            status = out / "status.json"
            if status.is_file() and read_json(status).get("step", 0) >= 14:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = read_json(out / "status.json")
    assert killed_at["state"] == "running" and 14 <= killed_at["step"] < steps
    assert not (out / "model.pt").exists()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    assert f"resuming at step {killed_at['step']}" in done.stderr
    assert same_weights(weights(reference), weights(out))
    ref_log, log = read_log(reference), read_log(out)
    assert [r["step"] for r in log] == [r["step"] for r in ref_log]
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    assert list(log[0]) == list(ref_log[0])
    if method.get("method") == "factor-vae":
        ref_state = torch.load(reference / "checkpoint.pt", weights_only=True)
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert same_weights(ref_state["discriminator"], state["discriminator"])
        assert torch.equal(ref_state["rng_shuffle"], state["rng_shuffle"])
    if method:
        return
    # a finished run, run again, says so and does nothing
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stderr
    assert same_weights(weights(reference), weights(out))


@pytest.mark.parametrize("method,hyper,extra", [
    ("beta-vae", {"beta": 4.0}, []),
    ("annealed-vae", {"gamma": 100.0, "capacity_max": 10.0, "capacity_steps": 4}, []),
    ("beta-tcvae", {"beta": 6.0}, ["tc"]),
    ("factor-vae", {"gamma": 20.0}, ["tc", "discriminator_loss", "discriminator_accuracy"]),
    ("dip-vae-i", {"lambda_od": 2.0}, ["dip_off_diagonal", "dip_diagonal"]),
    ("dip-vae-ii", {"lambda_od": 2.0}, ["dip_off_diagonal", "dip_diagonal"]),
])
def test_every_method_trains_logs_its_terms_and_is_deterministic(tmp_path, tiny_data_path, method, hyper, extra):
    config = small(tiny_data_path, **{"beta": 1.0, **hyper}, method=method, steps=4, log_every=1,
                   checkpoint_every=4, architecture="dlib", latent_dim=4)
    run = train(config, tmp_path / method)
    log = read_log(run)
    with open(run / "train_log.csv") as fh:
        columns = fh.readline().strip().split(",")
    assert columns == (["step", "loss", "reconstruction", "kl", "capacity"] + [f"kl_{i}" for i in range(4)]
                       + extra + ["img_per_s", "elapsed_s"])
    for r in log:   # one step per row: the logged terms make up the loss exactly (float32)
        base = r["reconstruction"] + r["kl"]
        want = {"beta-vae": r["reconstruction"] + 4.0 * r["kl"],
                "annealed-vae": r["reconstruction"] + 100.0 * abs(r["kl"] - r["capacity"]),
                "beta-tcvae": base + 5.0 * r.get("tc", 0.0),
                "factor-vae": base + 20.0 * r.get("tc", 0.0),
                "dip-vae-i": base + 2.0 * r.get("dip_off_diagonal", 0) + 20.0 * r.get("dip_diagonal", 0),
                "dip-vae-ii": base + 2.0 * r.get("dip_off_diagonal", 0) + 2.0 * r.get("dip_diagonal", 0)}[method]
        assert r["loss"] == pytest.approx(want, rel=1e-5)
    if method == "annealed-vae":
        assert [r["capacity"] for r in log] == pytest.approx([0.0, 2.5, 5.0, 7.5])
    if method == "factor-vae":
        assert all(0 <= r["discriminator_accuracy"] <= 1 and r["discriminator_loss"] > 0 for r in log)
    saved = read_json(run / "config.json")
    assert saved["model"]["architecture"] == "dlib" and saved["model"]["architecture_version"] == 1
    assert saved["model"]["parameters"] == sum(p.numel() for p in load_model(run)[0].parameters())
    again = train(config, tmp_path / (method + "-again"))
    assert same_weights(weights(run), weights(again)) and read_log(again)[-1]["loss"] == log[-1]["loss"]


def _strip_new_fields(run_dir: Path) -> None:
    """Make a run directory look like one written before architecture/lambda_od existed."""
    import json
    saved = read_json(run_dir / "config.json")
    for key in ("architecture", "lambda_od"):
        del saved["config"][key]
    saved.pop("model")
    (run_dir / "config.json").write_text(json.dumps(saved))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for key in ("architecture", "lambda_od"):
        del state["config"][key]
    torch.save(state, run_dir / "checkpoint.pt")


def test_old_run_directory_without_the_new_fields_loads_and_resumes(tmp_path, finished_run, tiny_data_path,
                                                                     monkeypatch):
    """A run written before architecture/lambda_od existed (keys absent from config.json
    and the checkpoint) loads as burgess, counts as the same run, and an interrupted one
    resumes from its checkpoint to the same weights."""
    import shutil
    from disentangle.models import methods
    run, config = finished_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    _strip_new_fields(old)
    model, cfg = load_model(old)
    assert model.architecture == "burgess" and "architecture" not in cfg
    assert same_weights(model.state_dict(), weights(run))
    messages = []
    assert train(config, old, echo=messages.append) == old and "already finished" in messages[0]
    # interrupted at step 13 (the last checkpoint at step 10), then resumed as an old run
    real, calls = methods.beta_vae, {"n": 0}

    def stop_at_13(*args, **kw):
        calls["n"] += 1
        terms = real(*args, **kw)
        return {**terms, "loss": terms["loss"] * float("inf")} if calls["n"] == 13 else terms

    monkeypatch.setattr(methods, "beta_vae", stop_at_13)
    part = tmp_path / "part"
    with pytest.raises(TrainingDiverged):
        train(config, part)
    monkeypatch.setattr(methods, "beta_vae", real)
    _strip_new_fields(part)
    messages = []
    train(config, part, echo=messages.append)
    assert "resuming at step 10" in messages[0]
    assert same_weights(weights(part), weights(run))
    assert read_log(part) == [{**r, "img_per_s": p["img_per_s"], "elapsed_s": p["elapsed_s"]}
                              for r, p in zip(read_log(run), read_log(part))]


def test_cli_rejects_a_hyperparameter_the_method_does_not_use(tmp_path):
    from click.testing import CliRunner
    from disentangle.cli import main
    result = CliRunner().invoke(main, ["train", "--method", "dip-vae-ii", "--beta", "2", "--steps", "5",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --beta: not a hyper-parameter of method dip-vae-ii (it uses --lambda-od)"]
    # the choices come from the configuration's field: click refuses them (usage error, status 2)
    result = CliRunner().invoke(main, ["train", "--architecture", "vgg", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "'vgg' is not one of 'burgess', 'dlib', 'fc'" in result.output
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- refusals
def test_finished_run_is_not_retrained(finished_run):
    run, config = finished_run
    before = (run / "model.pt").stat().st_mtime_ns
    messages = []
    assert train(config, run, echo=messages.append) == run
    assert "already finished" in messages[0]
    assert (run / "model.pt").stat().st_mtime_ns == before


def test_different_configuration_is_refused_naming_the_keys(finished_run, tiny_data_path):
    run, _ = finished_run
    with pytest.raises(UserError, match=r"beta \(4.0 there, 8.0 asked\).*seed"):
        train(small(tiny_data_path, beta=8.0, seed=2), run)
    # execution settings may differ: same run, already finished
    assert train(small(tiny_data_path, threads=2, checkpoint_every=3, log_every=1), run) == run


def test_foreign_checkpoint_is_refused(tmp_path, finished_run, tiny_data_path):
    import shutil
    run, _ = finished_run
    (tmp_path / "x").mkdir()
    shutil.copy(run / "checkpoint.pt", tmp_path / "x" / "checkpoint.pt")
    with pytest.raises(UserError, match=r"checkpoint.pt: belongs to a run with a different configuration \(differing: beta\)"):
        train(small(tiny_data_path, beta=2.0), tmp_path / "x")


def test_bad_options_are_one_line_user_errors(tmp_path, tiny_data_path):
    # the library names parameters (the CLI shows them as flags)
    for kw, pattern in (({"beta": -1.0}, "^beta"), ({"steps": 0}, "^steps"),
                        ({"method": "beta-z"}, "^method: unknown method .beta-z. \\(choose from beta-vae, annealed-vae"),
                        ({"data": str(tmp_path / "missing.h5")}, "missing.h5: no such dataset file")):
        with pytest.raises(UserError, match=pattern) as info:
            train(small(tiny_data_path, **kw), tmp_path / "bad")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "bad").exists()


def test_cli_reports_bad_options_in_one_line(tmp_path):
    from click.testing import CliRunner
    from disentangle.cli import main
    result = CliRunner().invoke(main, ["train", "--beta", "-2", "--steps", "5", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: --beta: must be >= 0, got -2.0"]


def test_cuda_without_gpu_is_a_user_error(tmp_path, tiny_data_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    # the library names the parameter, the CLI prints it as the flag
    with pytest.raises(UserError) as info:
        train(small(tiny_data_path, device="cuda"), tmp_path / "cuda")
    assert re.search("--device cuda: no CUDA GPU", user_message(info.value))


# --------------------------------------------------------------------------- divergence
def test_huge_learning_rate_fails_with_status_and_message(tmp_path, tiny_data_path):
    out = tmp_path / "lr"
    with pytest.raises(TrainingDiverged, match=r"diverged: loss is (nan|inf)"):
        train(small(tiny_data_path, lr=100.0), out)
    status = read_json(out / "status.json")
    assert status["state"] == "failed" and "lr 100" in status["reason"]
    assert not (out / "model.pt").exists()


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, tiny_data_path, monkeypatch):
    from disentangle.models import methods
    real, calls = methods.beta_vae, {"n": 0}

    def poisoned(*args, **kw):   # the 13th step produces an infinite loss
        calls["n"] += 1
        terms = real(*args, **kw)
        return {**terms, "loss": terms["loss"] * float("inf")} if calls["n"] == 13 else terms

    monkeypatch.setattr(methods, "beta_vae", poisoned)
    out = tmp_path / "inf"
    with pytest.raises(TrainingDiverged, match="at step 13.*last good checkpoint \\(step 10\\)"):
        train(small(tiny_data_path, steps=30), out)
    status = read_json(out / "status.json")
    assert status == {**status, "state": "failed", "step": 10}
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["step"] for r in read_log(out)] == [5, 10]
    assert not (out / "model.pt").exists()


# --------------------------------------------------------------------------- loading
def test_load_model_returns_eval_model_and_config(finished_run):
    run, config = finished_run
    model, cfg = load_model(run)
    assert not model.training and model.latent_dim == 10 and cfg == config.to_dict()
    x = torch.zeros(2, 1, 64, 64)
    mean, logvar = model.encode(x)
    assert mean.shape == (2, 10) and model.decode(mean).shape == (2, 1, 64, 64)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("damage", ["truncate", "flip", "pickle", "missing"])
def test_damaged_model_file_is_refused(tmp_path, finished_run, damage):
    import shutil
    run, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    path = copy / "model.pt"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:])
    elif damage == "pickle":
        import pickle
        path.write_bytes(pickle.dumps({"encoder": print}))
    else:
        path.unlink()
    with pytest.raises(UserError, match="model.pt"):
        load_model(copy)
    # without the recorded checksum, torch.load(weights_only=True) itself must refuse it
    if damage in ("truncate", "pickle"):
        status = read_json(copy / "status.json")
        status.pop("model_sha256")
        (copy / "status.json").write_text(__import__("json").dumps(status))
        with pytest.raises(UserError, match="model.pt: unreadable model file"):
            load_model(copy)


# --------------------------------------------------------------------------- host synchronisation
# the tensor methods that copy a value to the host (on an accelerator: wait for the device)
_HOST_SYNCS = {"__float__", "__int__", "__bool__", "item", "tolist", "numpy", "cpu", "nonzero", "unique"}


@pytest.mark.parametrize("accelerator", [False, True])
def test_host_synchronisation_only_at_log_and_checkpoint_points(tmp_path, tiny_data_path, monkeypatch, accelerator):
    """Counts, per training step, the tensor operations that read a value back to the host.
    On the CPU the loop reads each step's loss once (the exact-step NaN check); with the
    device type mocked as an accelerator's it reads nothing between log/checkpoint points."""
    from torch.overrides import TorchFunctionMode

    from disentangle import train as train_module
    events: list[str] = []
    in_optimizer = [False]

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            # torch's Adam (not capturable, not fused) keeps its step counter on the host on
            # every device; its .item() there reads host memory, not the device
            if name in _HOST_SYNCS and not in_optimizer[0]:
                events.append(name)
            return func(*args, **(kwargs or {}))

    def entering(*_):
        in_optimizer[0] = True

    def leaving(*_):
        in_optimizer[0] = False

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    hooks = [register_optimizer_step_pre_hook(entering), register_optimizer_step_post_hook(leaving)]
    real_sample = PackedBatches.sample

    def marked_sample(self, n):
        events.append("<step>")
        return real_sample(self, n)

    monkeypatch.setattr(PackedBatches, "sample", marked_sample)
    if accelerator:
        monkeypatch.setattr(train_module, "checks_every_step", lambda device: False)
    try:
        for method, hyper in (("beta-vae", {}), ("factor-vae", {"gamma": 10.0}), ("beta-tcvae", {"beta": 6.0})):
            events.clear()
            config = small(tiny_data_path, method=method, steps=12, log_every=4, checkpoint_every=6, **hyper)
            with Count():
                train(config, tmp_path / method)
            segments, current = [], None
            for e in events:
                if e == "<step>":
                    current = []
                    segments.append(current)
                elif current is not None:
                    current.append(e)
            assert len(segments) == 12 and not in_optimizer[0]
            for t, syncs in enumerate(segments):
                done = t + 1
                if done % 4 == 0 or done % 6 == 0:
                    assert syncs, "a log/checkpoint point reads the loss"   # the counter sees syncs at all
                    continue
                assert syncs == ([] if accelerator else ["__float__"]), (method, done, syncs)
    finally:
        for hook in hooks:
            hook.remove()


def test_the_per_step_loss_check_is_cpu_only():
    from disentangle.train import checks_every_step
    assert checks_every_step("cpu") and checks_every_step(torch.device("cpu"))
    assert not checks_every_step("cuda") and not checks_every_step("cuda:1") and not checks_every_step("mps")


def test_the_allocator_keeps_a_steps_memory(tmp_path):
    """glibc's defaults free a training step's activations back to the kernel and fault
    them in again at the next; tune_allocator stops that. Measured in fresh processes:
    minor page faults per step of the burgess network at batch 64, with and without."""
    script = (
        "import resource, sys, torch\n"
        "from disentangle.devices import tune_allocator\n"
        "if sys.argv[1] == 'tuned': print(tune_allocator(), file=sys.stderr)\n"
        "from disentangle.models.architectures import build_model\n"
        "torch.manual_seed(0); torch.set_num_threads(1)\n"
        "model = build_model(10, 'bernoulli', 0); opt = torch.optim.Adam(model.parameters())\n"
        "x = torch.rand(64, 1, 64, 64)\n"
        "def step():\n"
        "    mean, logvar = model.encode(x); loss = model.decode(mean).square().mean() + logvar.mean()\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
        "for _ in range(3): step()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(8): step()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = "1"
    faults = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        faults[mode] = float(out.stdout.split()[-1])
        if mode == "tuned":
            assert "mmap threshold 32 MiB" in out.stderr
    assert faults["tuned"] < 0.1 * faults["default"], faults
