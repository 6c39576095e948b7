"""alr: adversarial local regularization for image restoration.

The flow of the package:

* :mod:`alr.data` samples unpaired clean / degraded patches,
* :mod:`alr.train` trains a :class:`alr.PatchCritic` on them (WGAN-GP),
* :mod:`alr.critic` saves and loads the model file (safetensors + JSON),
* :mod:`alr.physics` defines the forward operators ``A`` and ``A^T``,
* :mod:`alr.fidelity` the data term F(Ax, y): Gaussian, or censored for clipped measurements,
* :mod:`alr.solver` restores images by minimising ``F(Ax, y) + lam R(x)``.

:mod:`alr.pretrained` finds the shipped models and their lambda tables,
:mod:`alr.baselines` and :mod:`alr.metrics` support the experiments of
:mod:`alr.experiments`, and :mod:`alr.cli` is the ``alr`` command.
"""
__version__ = "0.1.0"

from . import fidelity, physics  # noqa: E402
from .critic import PatchCritic, PointCritic  # noqa: E402
from .pretrained import load, lam_for  # noqa: E402
from .solver import restore  # noqa: E402

__all__ = ["PatchCritic", "PointCritic", "load", "lam_for", "restore", "physics", "fidelity", "__version__"]
