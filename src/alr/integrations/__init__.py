"""Bridges to other libraries, each importable only where that library is installed.

* :mod:`alr.integrations.deepinv`: DeepInverse (``pip install deepinv``; it needs torchvision):
  an ``alr`` critic as a ``deepinv.optim.Prior``, ``alr`` operators as DeepInverse physics and
  back, DeepInverse physics with their noise models as the degradation that trains a critic.
  ``make test-deepinv`` builds an environment with it and runs ``tests/interop/``
  (docs/deepinverse.md).
"""
