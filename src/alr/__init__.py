"""alr: adversarial local regularization for image restoration.

Restore an image in one call (the model's calibrated settings fill in the rest)::

    import alr
    x = alr.restore(y, model="gray", sigma=0.1)          # y: (B, C, H, W) tensor in [0, 1]

The modules follow the method:

* :mod:`alr.critic`: the patch critic r_theta and the regularizer R(x) it defines,
* :mod:`alr.data`: clean / degraded training patches,
* :mod:`alr.train`: WGAN-GP training of the critic,
* :mod:`alr.modelfile`: the model file (safetensors + JSON header, validated),
* :mod:`alr.physics`: forward operators A and A^T,
* :mod:`alr.fidelity`: the data term F(Ax, y): Gaussian, or censored for clipped measurements,
* :mod:`alr.solver`: minimising F(Ax, y) + lam R(x), and the one-call :func:`restore`,
* :mod:`alr.calibration`: fitting a model's lambda tables on training-side images,
* :mod:`alr.settings`: the restoration settings resolved from a model's tables,
* :mod:`alr.pretrained`: the shipped models and their tables,
* :mod:`alr.cli`: the ``alr`` command.

The paper's experiments and baselines live in :mod:`alr.bench`, which the rest never imports.
"""
__version__ = "0.1.0"

from . import fidelity, metrics, physics  # noqa: E402
from .critic import PatchCritic, Regularizer  # noqa: E402
from .errors import AlrError  # noqa: E402
from .modelfile import save_model as save  # noqa: E402
from .pretrained import lam_for, load  # noqa: E402
from .solver import restore  # noqa: E402

__all__ = ["restore", "load", "save", "lam_for", "PatchCritic", "Regularizer", "AlrError", "physics", "fidelity",
           "metrics", "__version__"]
