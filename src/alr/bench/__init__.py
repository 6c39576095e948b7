"""The paper's experiments and the baselines they compare against (``alr bench NAME``).

Not part of the library: nothing in :mod:`alr` imports this package; the ``alr`` command
forwards its ``bench`` verb here. :mod:`alr.bench.experiments` holds one command per table or
figure, :mod:`alr.bench.baselines` BM3D, TV and EPLL, :mod:`alr.bench.toy` the circle of
Figure 1.
"""
