"""A throw-away eighth method for tests/test_method_registry.py: β-VAE plus an L2 penalty
on the posterior mean, with a hyper-parameter of its own (``l2_weight``). Importing this
module registers it: its loss function and ONE registry entry, nothing else. (The sweep's
worker processes import it through $DISENTANGLE_PLUGINS.)"""
from disentangle import methods as method_registry

NAME = "l2-beta-vae"


def l2_beta_vae(x, logits, mean, logvar, z, step, *, likelihood, beta, l2_weight):
    from disentangle.models.methods import beta_vae
    terms = beta_vae(x, logits, mean, logvar, z, step, likelihood=likelihood, beta=beta)
    l2 = mean.square().sum(dim=1).mean()
    return {**terms, "loss": terms["loss"] + l2_weight * l2, "mean_l2": l2}


ENTRY = method_registry.Method(
    NAME, "L2-β-VAE",
    hyperparameters=("beta", method_registry.Hyperparameter(
        "l2_weight", 0.0, "l2-beta-vae: weight of the squared norm of the posterior mean.", name_key="w",
        latex=r"$w_{L2}$")),
    strength="l2_weight", loss=l2_beta_vae, log_terms=("mean_l2",))

if NAME not in method_registry.METHODS:
    method_registry.register(ENTRY)
