"""The Python API for a model made elsewhere (disentangle.external)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from disentangle.errors import UserError
from disentangle.external import evaluate_external

ROOT = Path(__file__).resolve().parent.parent
SMALL = {
    "beta_vae": {"num_train": 120, "num_eval": 60, "batch_size": 8},
    "factor_vae": {"num_train": 120, "num_eval": 60, "num_variance_estimate": 300, "batch_size": 8,
                   "prune_threshold": 0.0},
    "mig": {"num_train": 400},
    "sap": {"num_train": 200, "num_test": 100},
    "info": {"distortion_images": 200, "iq_min_samples": 200, "iq_max_samples": 400},
}
METRICS = ["mig", "sap", "beta_vae", "factor_vae", "info"]


def _exported(run_dir):
    """The run's network rebuilt from its model.pt as a user's own code would hold it."""
    from disentangle.models.architectures import VAE
    config = json.loads((Path(run_dir) / "config.json").read_text())["config"]
    model = VAE(config["latent_dim"], "bernoulli", config["architecture"])
    model.load_state_dict(torch.load(Path(run_dir) / "model.pt", weights_only=True))
    return model.eval()


def _values(entries):
    return {m: {k: v for k, v in e["values"].items() if not k.startswith("seconds")} for m, e in entries.items()}


def test_exported_model_scores_exactly_as_evaluate(run_dir, tiny_data, tmp_path):
    from disentangle.evaluation.evaluate import evaluate_run
    trained = evaluate_run(run_dir, metrics=METRICS, seed=3, data=tiny_data, params=SMALL, progress=False)
    out = tmp_path / "external" / "mine"
    external = evaluate_external(out, model=_exported(run_dir), data=tiny_data, metrics=METRICS, seed=3,
                                 params=SMALL, label="beta-vae", weights=Path(run_dir) / "model.pt",
                                 progress=False, figures=False)
    assert _values(external) == _values(trained)
    assert external["mig"]["model_sha256"] == trained["mig"]["model_sha256"]
    assert external["info"]["origin"] == "external"
    saved = json.loads((out / "config.json").read_text())
    assert saved["origin"]["kind"] == "external" and saved["origin"]["label"] == "beta-vae"
    assert saved["origin"]["weights"]["sha256"] == trained["mig"]["model_sha256"]
    import h5py
    with h5py.File(Path(run_dir) / "codes.h5") as a, h5py.File(out / "codes.h5") as b:
        assert np.array_equal(a["mean"][...], b["mean"][...]) and np.array_equal(a["logvar"][...], b["logvar"][...])


def test_callables_row_in_report_and_figures(run_dir, tiny_data_path, tmp_path):
    """Plain callables (the user's encoder and a decoder returning probabilities): the
    codes are the model's, the figures are written, and the results table has the row."""
    from disentangle.results import collect
    model = _exported(run_dir)
    out = tmp_path / "results" / "theirs"
    entries = evaluate_external(out, encoder=lambda x: model.encode(x),
                                decoder=lambda z: torch.sigmoid(model.decode(z)), decoder_output="probabilities",
                                data=tiny_data_path, metrics=["mig", "info"], params=SMALL, label="my-vae",
                                settings={"beta": 4, "seed": 2}, progress=False)
    assert (out / "traversal.png").stat().st_size > 1000 and (out / "reconstructions.png").stat().st_size > 1000
    df = collect(tmp_path / "results")
    row = df.iloc[0]
    method = row["method"]
    assert method == "my-vae" and row["beta"] == 4.0 and row["seed"] == 2
    assert row["info.distortion_nats"] == pytest.approx(entries["info"]["values"]["distortion_nats"])
    # the probabilities' round trip through the logit changes the distortion negligibly
    logits_out = evaluate_external(tmp_path / "logits", model=model, data=tiny_data_path, metrics=["info"],
                                   params=SMALL, progress=False, figures=False)
    assert entries["info"]["values"]["distortion_nats"] == pytest.approx(
        logits_out["info"]["values"]["distortion_nats"], rel=1e-4)
    assert entries["info"]["values"]["rate_nats"] == pytest.approx(logits_out["info"]["values"]["rate_nats"], rel=1e-5)


def test_without_decoder(run_dir, tiny_data_path, tmp_path):
    model = _exported(run_dir)
    with pytest.raises(UserError, match=r"^metric info: needs the model's decoder and none was given") as err:
        evaluate_external(tmp_path / "a", encoder=model.encode, data=tiny_data_path, metrics=["info"])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="figures.*need the model's decoder"):
        evaluate_external(tmp_path / "a", encoder=model.encode, data=tiny_data_path, figures=True)
    assert not (tmp_path / "a").exists()   # refused before anything was written
    entries = evaluate_external(tmp_path / "b", encoder=model.encode, data=tiny_data_path,
                                metrics=["mig", "info_posterior"], params=SMALL, progress=False)
    assert set(entries) == {"mig", "info_posterior"}
    assert not (tmp_path / "b" / "traversal.png").exists()


def test_bad_models_refused_in_one_line(tiny_data_path, tmp_path):
    with pytest.raises(UserError, match="encoder: returned Tensor, expected"):
        evaluate_external(tmp_path / "a", encoder=lambda x: x.flatten(1)[:, :4], data=tiny_data_path)
    with pytest.raises(UserError, match=r"encoder: log-variance has shape \(2,\), expected \(2, latent_dim\)"):
        evaluate_external(tmp_path / "a", encoder=lambda x: (x.flatten(1)[:, :4], x.flatten(1)[:, 0]),
                          data=tiny_data_path)
    with pytest.raises(UserError, match=r"encoder: mean \(2, 4\) and log-variance \(2, 3\) differ"):
        evaluate_external(tmp_path / "a", encoder=lambda x: (x.flatten(1)[:, :4], x.flatten(1)[:, :3]),
                          data=tiny_data_path)
    with pytest.raises(UserError, match="decoder: returned shape"):
        evaluate_external(tmp_path / "a", encoder=lambda x: (x.flatten(1)[:, :4], x.flatten(1)[:, :4]),
                          decoder=lambda z: z, data=tiny_data_path)
    with pytest.raises(UserError, match="label"):
        evaluate_external(tmp_path / "a", encoder=lambda x: x, label=" ", data=tiny_data_path)
    with pytest.raises(UserError, match="weights"):
        evaluate_external(tmp_path / "a", encoder=lambda x: x, weights=tmp_path / "none.pt", data=tiny_data_path)
    with pytest.raises(UserError, match="unknown setting"):
        evaluate_external(tmp_path / "a", encoder=lambda x: x, settings={"colour": 1}, data=tiny_data_path)


def test_docs_example_runs(run_dir, tiny_data_path, tmp_path, monkeypatch):
    """The example of docs/external.md, run as written, with its paths pointed here."""
    text = (ROOT / "docs" / "external.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    code = (code.replace('"my_vae.pt"', repr(str(tmp_path / "my_vae.pt")))
                .replace('"data/dsprites.h5"', repr(str(tiny_data_path)))
                .replace('"results/my-vae"', repr(str(tmp_path / "results" / "my-vae")))
                .replace("latent_dim=10", "latent_dim=6")
                .replace('metrics=["mig", "dci", "info"]', 'metrics=["mig", "info"], params=' + repr(SMALL)))
    torch.save(_exported(run_dir).state_dict(), tmp_path / "my_vae.pt")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/external.md", "exec"), namespace)
    scores = json.loads((tmp_path / "results" / "my-vae" / "scores.json").read_text())
    assert {"mig", "info"} <= set(scores)
    assert (tmp_path / "results" / "my-vae" / "traversal.png").is_file()
