"""Training loop of one β-VAE run: checkpoints, exact resume, divergence handling, and
loading a trained model back.

A run directory (``results/<run>/``) holds config.json, checkpoint.pt, model.pt,
train_log.csv and status.json. ``train(config, out_dir)`` is idempotent: a finished
run returns at once, an interrupted one resumes from its last checkpoint, and a
directory holding a different configuration is refused.

Reproducibility. A run's numbers depend only on its configuration (on one device type):
the initial weights come from ``seed``; batches are image indices drawn uniformly with
replacement (as disentanglement_lib's sampler) from a CPU ``torch.Generator``; the
reparameterisation noise comes from a second generator on the training device. Both
generator states, the optimizer state and the log are in every checkpoint, so a run
killed at any moment and started again ends with bit-identical weights.

Data path. The dataset stays bit-packed (512 bytes per image) in one uint8 tensor on
the training device; each batch is gathered and unpacked there with two integer ops
(no DataLoader, no per-image collate, no 3 GB float copy of the dataset).
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from disentangle.config import TrainConfig, differing_keys
from disentangle.errors import UserError
from disentangle.results import (CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE, STATUS_FILE, TRAIN_LOG_FILE,
                                 WriteError, clean_stale_temps, environment_info, file_sha256, read_json,
                                 write_bytes_atomic, write_error, write_json_atomic, write_text_atomic)

CHECKPOINT_FORMAT = "disentangle-checkpoint-1"


class TrainingDiverged(UserError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- small helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_status(run_dir: Path, state: str, step: int, reason: str | None = None, **extra: Any) -> None:
    write_json_atomic(run_dir / STATUS_FILE, {"state": state, "reason": reason, "step": int(step),
                                              "updated": _now(), **extra})


def read_status(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable status file ({exc})") from None


def is_finished(run_dir: str | Path) -> bool:
    status = read_status(run_dir)
    return bool(status and status.get("state") == "finished" and (Path(run_dir) / MODEL_FILE).is_file())


def resolve_device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available to this torch "
                        f"({torch.__version__}); use --device cpu or auto")
    return torch.device(name)


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Set torch's intra-op thread count for the run, and restore it afterwards."""
    import torch
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _read_config_file(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    try:
        saved = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable run configuration ({exc})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise UserError(f"{path}: not a disentangle run configuration (no 'config' entry)")
    return saved


# --------------------------------------------------------------------------- the data path
class PackedBatches:
    """Serves training batches from the bit-packed dataset, on the training device.

    ``indices(n)`` draws image indices uniformly with replacement from a seeded CPU
    generator (device independent, so a run sees the same images on CPU and GPU);
    ``images(idx)`` gathers the packed rows and unpacks the bits to float32 {0, 1}
    images of shape (n, 1, 64, 64).
    """

    def __init__(self, packed: np.ndarray, device, seed: int):
        import torch
        self.device = torch.device(device)
        self.packed = torch.from_numpy(np.ascontiguousarray(packed)).to(self.device)
        self.num_images = self.packed.shape[0]
        # numpy.packbits order: the first pixel is the most significant bit
        self._shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=self.device)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def indices(self, n: int):
        import torch
        return torch.randint(0, self.num_images, (n,), generator=self.generator)

    def images(self, idx):
        import torch
        rows = self.packed.index_select(0, idx.to(self.device, non_blocking=True))
        bits = torch.bitwise_and(torch.bitwise_right_shift(rows.unsqueeze(-1), self._shifts), 1)
        return bits.reshape(len(idx), 1, 64, 64).to(torch.float32)

    def sample(self, n: int):
        return self.images(self.indices(n))


# --------------------------------------------------------------------------- the step
class Trainer:
    """Model, optimizer and the per-step update for one configuration."""

    def __init__(self, config: TrainConfig, device):
        import torch
        from disentangle.models.vae import build_model
        self.config = config
        self.device = torch.device(device)
        seeds = np.random.SeedSequence(config.seed).generate_state(3)
        self.model = build_model(config.latent_dim, config.likelihood, int(seeds[0])).to(self.device)
        # channels_last: oneDNN's (and cuDNN's) faster conv layout, ~1.1x on CPU; the
        # state dict keeps the same names and values
        self.model.set_execution(torch.bfloat16 if config.precision == "bf16-mixed" else None,
                                 channels_last=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.batch_seed = int(seeds[1])
        self.noise_generator = torch.Generator(device=self.device)
        self.noise_generator.manual_seed(int(seeds[2]))

    def step(self, x, cap: float):
        """One Adam update on batch x (capacity ``cap`` for beta-b); returns the detached
        stats vector [loss, reconstruction, kl, kl_0, ..., kl_{D-1}]."""
        import torch
        from disentangle.models.objectives import vae_loss
        c = self.config
        noise = torch.randn((x.shape[0], c.latent_dim), generator=self.noise_generator, device=self.device)
        logits, mean, logvar = self.model(x, noise)
        loss, recon, kl, kl_dims = vae_loss(logits, x, mean, logvar, c.likelihood, c.objective,
                                            c.beta, c.gamma, cap)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return torch.cat([torch.stack([loss, recon, kl]), kl_dims]).detach()


# --------------------------------------------------------------------------- checkpoints
def _log_columns(latent_dim: int) -> list[str]:
    return (["step", "loss", "reconstruction", "kl", "capacity"]
            + [f"kl_{i}" for i in range(latent_dim)] + ["img_per_s", "elapsed_s"])


def _log_csv(columns: list[str], rows: list[list[float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([int(row[0])] + [repr(float(v)) for v in row[1:]])
    return buf.getvalue()


def _save_checkpoint(run_dir: Path, trainer: Trainer, batches: PackedBatches, step: int,
                     log_rows: list, elapsed: float, acc, acc_steps: int) -> None:
    import torch
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "device_type": trainer.device.type,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "rng": {"batches": batches.generator.get_state(),
                "noise": trainer.noise_generator.get_state()},
        "log_rows": [list(map(float, r)) for r in log_rows],
        # the open log interval, so a resumed run logs the same means
        "log_acc": acc.detach().cpu().clone(), "log_acc_steps": int(acc_steps),
        "elapsed_s": float(elapsed),
        "config": trainer.config.identity(),
    }
    _torch_save_atomic(state, run_dir / CHECKPOINT_FILE)


def _torch_save_atomic(obj, path: Path) -> None:
    """torch.save into memory, then an atomic write: torch's own file writer reports a
    full disk as "RuntimeError: ... unexpected pos"; a Python write says ENOSPC."""
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getbuffer())


def _load_checkpoint(run_dir: Path, trainer: Trainer, batches: PackedBatches) -> dict:
    import torch
    path = run_dir / CHECKPOINT_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a disentangle checkpoint")
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"delete it to restart the run from step 0") from None
    saved_identity = state.get("config") or {}
    diff = differing_keys(saved_identity, trainer.config.identity())
    if diff:
        raise UserError(f"{path}: belongs to a run with a different configuration "
                        f"(differing: {', '.join(diff)}); delete it or choose another --out")
    if state["device_type"] != trainer.device.type:
        raise UserError(f"{path}: written on {state['device_type']}, cannot resume exactly on "
                        f"{trainer.device.type}; rerun with --device {state['device_type']}")
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    batches.generator.set_state(state["rng"]["batches"])
    trainer.noise_generator.set_state(state["rng"]["noise"])
    return {"step": int(state["step"]), "log_rows": [list(r) for r in state["log_rows"]],
            "elapsed_s": float(state["elapsed_s"]), "log_acc": state["log_acc"],
            "log_acc_steps": int(state["log_acc_steps"])}


# --------------------------------------------------------------------------- train
def _check_existing(run_dir: Path, config: TrainConfig) -> dict | None:
    """Refuse a run directory that holds another configuration; return its config.json."""
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    saved = _read_config_file(run_dir)
    diff = differing_keys(saved["config"], config.to_dict())
    if diff:
        shown = ", ".join(f"{k} ({saved['config'].get(k)!r} there, {config.to_dict().get(k)!r} asked)" for k in diff)
        raise UserError(f"{run_dir}: holds a run with a different configuration: {shown}; "
                        f"choose another --out")
    return saved


def default_run_dir(config: TrainConfig, results_dir: str | Path = "results") -> Path:
    """results/<objective>-b<beta>[-g<gamma>-c<capacity>]-s<seed>, e.g. results/beta-h-b4-s0."""
    name = f"{config.objective}-b{config.beta:g}"
    if config.objective == "beta-b":
        name = f"{config.objective}-g{config.gamma:g}-c{config.capacity_max:g}"
    return Path(results_dir) / f"{name}-s{config.seed}"


def train(config: TrainConfig, out_dir: str | Path | None = None, progress: bool = False,
          echo: Callable[[str], None] | None = None) -> Path:
    """Train (or resume, or skip if finished) the run ``config`` in ``out_dir`` (default
    :func:`default_run_dir`); return the run directory. Raises UserError for bad
    options, a refused directory, or a diverged run (whose status.json then says
    "failed" with the reason)."""
    say = echo or (lambda msg: None)
    config.validate()
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir}: exists and is not a directory")
    saved = _check_existing(run_dir, config)
    if saved is not None and is_finished(run_dir):
        say(f"{run_dir}: already finished ({config.steps} steps); nothing to do")
        return run_dir

    from disentangle.data.dsprites import load_dsprites
    data = load_dsprites(config.data)
    if saved is not None:
        old_sha = (saved.get("data") or {}).get("content_sha256")
        if old_sha != data.provenance["content_sha256"]:
            raise UserError(f"{run_dir}: was trained on other data ({saved['data'].get('path')}, "
                            f"sha256 {str(old_sha)[:12]}...) than {data.path}; choose another --out")

    import torch
    device = resolve_device(config.device)
    from disentangle.sweep import RunLock
    lock = RunLock(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        locked = lock.acquire(reentrant=True)
    except OSError as exc:
        raise (write_error(exc, run_dir) or exc) from None
    if not locked:
        raise UserError(f"{run_dir}: busy: another process is working on this run ({lock.holder()}); "
                        f"wait for it or choose another --out")
    try:
        # under the lock: another process may have written the run meanwhile
        saved = _check_existing(run_dir, config)
        if saved is not None and is_finished(run_dir):
            say(f"{run_dir}: already finished ({config.steps} steps); nothing to do")
            return run_dir
        # no other writer is alive: what a killed one left half-written goes
        clean_stale_temps(run_dir)
        _train_locked(config, run_dir, saved, data, device, progress, say)
    finally:
        lock.release()
    say(f"{run_dir}: finished ({config.steps} steps)")
    return run_dir


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _train_locked(config: TrainConfig, run_dir: Path, saved: dict | None, data, device, progress: bool,
                  say: Callable[[str], None]) -> None:
    import torch
    step = 0
    try:
        with _torch_threads(config.threads) as threads:
            if device.type == "cuda":
                # exact repeatability on one GPU type: deterministic conv algorithms only
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
            trainer = Trainer(config, device)
            batches = PackedBatches(data.packed, device, trainer.batch_seed)
            resumed = None
            if (run_dir / CHECKPOINT_FILE).is_file():
                # before config.json is written: a refused checkpoint leaves the directory as it was
                resumed = _load_checkpoint(run_dir, trainer, batches)
                say(f"{run_dir}: resuming at step {resumed['step']} of {config.steps}")
            if saved is None:
                write_json_atomic(run_dir / CONFIG_FILE, {
                    "config": config.to_dict(), "data": data.provenance, "package": environment_info(),
                    "created": _now()})
            step = resumed["step"] if resumed else 0
            # pid and host let a sweep tell a live "running" run from one that was killed
            runtime = {"device": str(device), "threads": threads, "pid": os.getpid(),
                       "host": socket.gethostname()}
            write_status(run_dir, "running", step, runtime=runtime)
            _loop(config, run_dir, trainer, batches, resumed, progress, runtime)
    except WriteError as exc:
        _record_failure(run_dir, f"training failed: {exc}")
        raise
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        reason = (f"out of memory on {device} (--batch-size {config.batch_size}, --latent-dim "
                  f"{config.latent_dim}); use a smaller batch or model")
        _record_failure(run_dir, f"training failed: {reason}")
        raise UserError(f"{run_dir}: {reason}") from None


def _record_failure(run_dir: Path, reason: str) -> None:
    """status.json "failed" with ``reason`` (its step kept), where it can still be written."""
    if not (run_dir / CONFIG_FILE).is_file():
        return  # nothing of the run was written: leave the directory as it was
    with contextlib.suppress(UserError, OSError, ValueError, TypeError):
        status = read_status(run_dir)
        step = int((status or {}).get("step", 0) or 0) if isinstance(status, dict) else 0
        write_status(run_dir, "failed", step, reason=reason)


def _loop(config: TrainConfig, run_dir: Path, trainer: Trainer, batches: PackedBatches,
          resumed: dict | None, progress: bool, runtime: dict) -> None:
    import torch
    from disentangle.models.objectives import capacity
    columns = _log_columns(config.latent_dim)
    per_step_check = trainer.device.type == "cpu"  # free on CPU; a GPU sync per step is not
    acc = torch.zeros(3 + config.latent_dim, dtype=torch.float64, device=trainer.device)
    start, log_rows, elapsed, acc_steps = 0, [], 0.0, 0
    if resumed is not None:
        start, log_rows, elapsed = resumed["step"], resumed["log_rows"], resumed["elapsed_s"]
        acc.copy_(resumed["log_acc"])
        acc_steps = resumed["log_acc_steps"]
    interval_start, last_good, timed_steps = time.perf_counter(), start, 0
    bar = None
    if progress:
        import sys
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
    try:
        for t in range(start, config.steps):
            cap = capacity(t, config.capacity_max, config.capacity_steps) if config.objective == "beta-b" else 0.0
            stats = trainer.step(batches.sample(config.batch_size), cap)
            acc += stats
            acc_steps += 1
            timed_steps += 1
            done = t + 1
            log_now = done % config.log_every == 0 or done == config.steps
            ckpt_now = done % config.checkpoint_every == 0 or done == config.steps
            if per_step_check or log_now or ckpt_now:
                loss_value = float(stats[0]) if per_step_check else float(acc[0])
                if not math.isfinite(loss_value):
                    _fail(run_dir, config, t if per_step_check else None, done, loss_value, last_good)
            if log_now:
                now = time.perf_counter()
                seconds = now - interval_start
                elapsed += seconds
                mean = (acc / acc_steps).tolist()
                log_rows.append([done, mean[0], mean[1], mean[2], cap] + mean[3:]
                                + [timed_steps * config.batch_size / max(seconds, 1e-9), elapsed])
                if bar is not None:
                    bar.set_postfix(loss=f"{mean[0]:.1f}", kl=f"{mean[2]:.2f}",
                                    img_s=f"{log_rows[-1][-2]:.0f}", refresh=False)
                    bar.update(done - bar.n)
                acc.zero_()
                acc_steps, timed_steps, interval_start = 0, 0, time.perf_counter()
            if ckpt_now:
                _save_checkpoint(run_dir, trainer, batches, done, log_rows, elapsed, acc, acc_steps)
                write_text_atomic(run_dir / TRAIN_LOG_FILE, _log_csv(columns, log_rows))
                last_good = done
                if done < config.steps:
                    write_status(run_dir, "running", done, runtime=runtime)
        model_path = run_dir / MODEL_FILE
        _torch_save_atomic({k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()},
                           model_path)
        write_status(run_dir, "finished", config.steps, runtime=runtime, model_sha256=file_sha256(model_path))
    finally:
        if bar is not None:
            bar.close()


def _fail(run_dir: Path, config: TrainConfig, step: int | None, done: int, value: float, last_good: int):
    where = f"at step {step + 1}" if step is not None else f"by step {done}"
    kept = (f"kept the last good checkpoint (step {last_good})" if (run_dir / CHECKPOINT_FILE).is_file()
            else "no checkpoint had been written")
    reason = (f"training diverged: loss is {value} {where} (lr {config.lr:g}, "
              f"{config.objective} β={config.beta:g}); {kept}")
    write_status(run_dir, "failed", last_good, reason=reason)
    raise TrainingDiverged(f"{run_dir}: {reason}")


# --------------------------------------------------------------------------- loading
def load_model(run_dir: str | Path, device: str = "cpu"):
    """(model in eval mode on ``device``, config.json["config"]) of a finished run.
    The weights are read with ``torch.load(weights_only=True)``; a missing, truncated,
    tampered or mismatched model file raises UserError naming it."""
    import torch
    from disentangle.models.vae import BetaVAE
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    saved = _read_config_file(run_dir)
    cfg = saved["config"]
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{path}: no model file (has the run finished? run `disentangle train` "
                        f"with the same options)")
    status = read_status(run_dir) or {}
    expected = status.get("model_sha256")
    if expected and file_sha256(path) != expected:
        raise UserError(f"{path}: sha256 differs from the one recorded in {STATUS_FILE} when training "
                        f"finished; the file was modified or damaged")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip, a foreign pickle: all mean "not our weights"
        raise UserError(f"{path}: unreadable model file ({type(exc).__name__}); "
                        f"it is truncated, tampered with, or not a state dict") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a model state dict")
    model = BetaVAE(int(cfg["latent_dim"]), str(cfg["likelihood"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit the configured model "
                        f"({str(exc).splitlines()[0]})") from None
    return model.to(torch.device(device)).eval(), cfg
