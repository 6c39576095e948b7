"""Linear forward operators ``A`` with exact adjoints ``A^T``.

Every operator maps an image ``x`` of shape (B, C, H, W) to measurements
``y = A(x)`` and back with ``A_adjoint(y)``, and satisfies
``<A x, y> = <x, A^T y>`` to floating-point precision (tested). ``init(y)``
gives the starting point of the solver (``A^T y`` unless a better one is
cheap, such as an interpolated image for super-resolution).

Convolutions use **circular (periodic) boundary conditions**: they are exact
circulant operators, their adjoint is the correlation with the same kernel,
and a blurred image made with :meth:`Blur.A` is consistent with the model.

Example
-------
>>> import torch
>>> from alr.physics import Blur, gaussian_kernel
>>> A = Blur(gaussian_kernel(1.6))
>>> x, y = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
>>> bool(torch.allclose((A.A(x) * y).sum(), (x * A.A_adjoint(y)).sum(), rtol=1e-4))
True
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _to_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """Normalise a kernel to shape (kh, kw) with odd sides (zero-padded at the end)."""
    k = torch.as_tensor(kernel, dtype=torch.float32)
    while k.dim() > 2:
        if k.shape[0] != 1:
            raise ValueError(f"kernel must be 2-D, got shape {tuple(kernel.shape)}")
        k = k[0]
    if k.dim() != 2 or k.numel() == 0:
        raise ValueError(f"kernel must be 2-D, got shape {tuple(k.shape)}")
    if not torch.isfinite(k).all():
        raise ValueError("kernel contains NaN or infinite values")
    k = F.pad(k, (0, 1 - k.shape[1] % 2, 0, 1 - k.shape[0] % 2))
    return k


#: Largest side of a kernel :func:`gaussian_kernel` makes (sigma up to 341 pixels).
MAX_KERNEL = 2049


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Normalised isotropic Gaussian kernel of std ``sigma`` pixels (size 2*ceil(3 sigma)+1, at
    most :data:`MAX_KERNEL`)."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    size = size or 2 * math.ceil(3 * sigma) + 1
    if size > MAX_KERNEL:
        raise ValueError(f"a Gaussian of std {sigma:g} pixels needs a {size}-pixel kernel, larger than alr makes "
                         f"({MAX_KERNEL})")
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def motion_kernel(length: float, angle: float = 0.0) -> torch.Tensor:
    """Normalised linear motion-blur kernel of ``length`` pixels at ``angle`` degrees."""
    if length < 1:
        raise ValueError("motion length must be >= 1 pixel")
    size = 2 * math.ceil(length / 2) + 1
    c = (size - 1) / 2
    k = torch.zeros(size, size, dtype=torch.float64)
    th = math.radians(angle)
    for t in torch.linspace(-length / 2, length / 2, 8 * size).tolist():
        px, py = c + t * math.cos(th), c - t * math.sin(th)
        x0, y0 = math.floor(px), math.floor(py)
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                if 0 <= xi < size and 0 <= yi < size:
                    k[yi, xi] += (1 - abs(px - xi)) * (1 - abs(py - yi))
    return (k / k.sum()).float()


def _circular_correlate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """out[i] = sum_j k[j] x[i + j - c] with periodic x; per channel."""
    kh, kw = k.shape
    c = x.shape[1]
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="circular")
    w = k.to(x)[None, None].expand(c, 1, kh, kw)
    return F.conv2d(xp, w, groups=c)


class LinearOperator(nn.Module):
    """Base class of the forward operators: subclasses define ``A`` and ``A_adjoint``.

    Operators are ``nn.Module`` s whose tensors (kernel, mask) are buffers, so
    ``op.to(device)`` moves them; calling ``op(x)`` applies ``A``.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def init(self, y: torch.Tensor) -> torch.Tensor:
        """Starting point x0 of the solver: A^T y by default."""
        return self.A_adjoint(y)

    def check_measurement(self, y: torch.Tensor) -> None:
        """Raise ValueError if ``y`` cannot be a measurement of this operator."""
        if y.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise ValueError("measurement contains NaN or infinite values")

    def lipschitz(self) -> float:
        """An upper bound of ||A^T A|| (operator norm), used to pick gradient steps."""
        return 1.0

    def select(self, idx: list[int], batch: int | None = None) -> "LinearOperator":
        """The operator of the images ``idx`` of a batch of ``batch`` images (the same one unless
        it holds one per image)."""
        return self


class Operator(LinearOperator):
    """Any object with ``A(x)`` and ``A_adjoint(y)`` (a DeepInverse physics, a user's class) as an
    :class:`LinearOperator`, with what ``alr`` adds: the start ``A^T y`` (or the object's own
    ``init``), a Lipschitz bound ``||A^T A||`` estimated by power iteration on the batch it starts
    from (again for a batch of another shape), and the measurement checks.

    >>> import torch
    >>> class Double:
    ...     def A(self, x): return 2 * x
    ...     def A_adjoint(self, y): return 2 * y
    >>> op = as_operator(Double())
    >>> round(op.estimate_lipschitz(torch.rand(1, 1, 8, 8)), 3)
    4.04
    """

    def __init__(self, obj) -> None:
        super().__init__()
        self.obj = obj  # an nn.Module (a DeepInverse physics) becomes a submodule: .to() moves it
        self._lip: tuple[tuple[int, ...], float] | None = None  # (batch shape, bound)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.obj.A(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.obj.A_adjoint(y)

    def init(self, y: torch.Tensor) -> torch.Tensor:
        """The object's own ``init(y)`` if it has one, else ``A^T y``; estimates the Lipschitz bound on the way."""
        own = getattr(self.obj, "init", None)
        x = own(y) if callable(own) else self.A_adjoint(y)
        self.estimate_lipschitz(x)
        return x

    def estimate_lipschitz(self, x: torch.Tensor, iters: int = 30) -> float:
        """||A^T A|| by power iteration from a random image shaped like ``x`` (cached per shape), times 1.01
        (a safe bound)."""
        if self._lip is None or self._lip[0] != tuple(x.shape):
            g = torch.Generator().manual_seed(0)
            v = torch.rand(x.shape, generator=g).to(x)
            norm = 1.0
            for _ in range(iters):
                w = self.A_adjoint(self.A(v))
                norm = float(w.flatten().norm()) / max(float(v.flatten().norm()), 1e-30)
                v = w / max(float(w.flatten().norm()), 1e-30)
            self._lip = (tuple(x.shape), 1.01 * norm)
        return self._lip[1]

    def lipschitz(self) -> float:
        """The bound estimated by :meth:`estimate_lipschitz` (at ``init``)."""
        if self._lip is None:
            raise ValueError("the operator's Lipschitz bound is estimated at init(y): call init first")
        return self._lip[1]

    def select(self, idx: list[int], batch: int | None = None) -> "Rows":
        """The images ``idx`` of a batch of ``batch`` (the wrapped object may hold one setting per image)."""
        if batch is None:
            raise ValueError("a wrapped operator selects images of a known batch: give batch=")
        return Rows(self, idx, batch)


class Rows(LinearOperator):
    """The images ``idx`` of a wrapped operator's batch of ``batch``: the object sees the whole batch,
    the other images zero (A is linear), so settings it holds per image stay with their images."""

    def __init__(self, op: Operator, idx: list[int], batch: int) -> None:
        super().__init__()
        self.op, self.idx, self.batch = op, list(idx), batch

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        full = x.new_zeros((self.batch, *x.shape[1:]))
        full[self.idx] = x
        return full

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.A(self._whole(x))[self.idx]

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.A_adjoint(self._whole(y))[self.idx]

    def init(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.init(self._whole(y))[self.idx]

    def estimate_lipschitz(self, x: torch.Tensor) -> float:
        return self.op.estimate_lipschitz(self._whole(x))

    def lipschitz(self) -> float:
        return self.op.lipschitz()

    def select(self, idx: list[int], batch: int | None = None) -> "Rows":
        return Rows(self.op, [self.idx[i] for i in idx], self.batch)


def as_operator(physics) -> LinearOperator:
    """``physics`` as an :class:`LinearOperator`: None is denoising (A = I), an alr operator is
    itself, any other object with ``A`` and ``A_adjoint`` is wrapped in :class:`Operator`."""
    if physics is None:
        return Denoising()
    if isinstance(physics, LinearOperator):
        return physics
    if callable(getattr(physics, "A", None)) and callable(getattr(physics, "A_adjoint", None)):
        return Operator(physics)
    raise TypeError(f"a forward operator needs methods A and A_adjoint; got {type(physics).__name__}")


class Denoising(LinearOperator):
    """A = I: y = x + n."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


class Blur(LinearOperator):
    """A x = k * x, a convolution with ``kernel`` under circular boundary conditions.

    The kernel is used as a true convolution (flipped before correlation) and
    is not renormalised. Even-sized kernels are zero-padded to odd size with
    the centre at index ``size // 2``. A kernel larger than the image is an error.
    """

    def __init__(self, kernel: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("kernel", _to_kernel(kernel))

    def _fits(self, x: torch.Tensor) -> None:
        kh, kw = self.kernel.shape
        if kh > x.shape[-2] or kw > x.shape[-1]:
            raise ValueError(f"blur kernel {kh}x{kw} is larger than the image {x.shape[-2]}x{x.shape[-1]}")

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self._fits(x)
        return _circular_correlate(x, self.kernel.flip(0, 1))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._fits(y)
        return _circular_correlate(y, self.kernel)

    def check_measurement(self, y: torch.Tensor) -> None:
        """The base checks, and a kernel no larger than the image."""
        super().check_measurement(y)
        self._fits(y)

    def lipschitz(self) -> float:
        """``||k||_1^2``, a bound of ``||A^T A||`` for a convolution."""
        return float(self.kernel.abs().sum()) ** 2


class Inpainting(LinearOperator):
    """A x = m . x with a binary (or weighting) mask ``m`` of shape (H, W), (C, H, W) or (B, C, H, W).

    ``init`` fills the unknown pixels with the mean of the known ones.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        m = torch.as_tensor(mask, dtype=torch.float32)
        while m.dim() < 4:
            m = m.unsqueeze(0)
        if not torch.isfinite(m).all():
            raise ValueError("mask contains NaN or infinite values")
        super().__init__()
        self.register_buffer("mask", m)

    def _m(self, x: torch.Tensor) -> torch.Tensor:
        b, c = self.mask.shape[:2]
        if self.mask.shape[-2:] != x.shape[-2:] or b not in (1, x.shape[0]) or c not in (1, x.shape[1]):
            raise ValueError(f"mask {tuple(self.mask.shape)} does not match the images {tuple(x.shape)} "
                             "(one mask, or one per image / channel, of the image's size)")
        return self.mask.to(x)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._m(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._m(y)

    def check_measurement(self, y: torch.Tensor) -> None:
        """The base checks, and a mask of the image's size."""
        super().check_measurement(y)
        self._m(y)

    def init(self, y: torch.Tensor) -> torch.Tensor:
        """The known pixels, and the mean of the known ones in the holes."""
        m = self._m(y).expand_as(y)
        known = (m > 0).to(y)
        mean = (y * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp_min(1)
        return torch.where(known > 0, y, mean.expand_as(y))

    def lipschitz(self) -> float:
        """``max m^2``."""
        return float(self.mask.abs().max()) ** 2

    def select(self, idx: list[int], batch: int | None = None) -> "Inpainting":
        """The masks of the images ``idx`` (the same mask if it is shared)."""
        return self if self.mask.shape[0] == 1 else Inpainting(self.mask[idx])


def random_mask(shape: tuple[int, int], missing: float, seed: int = 0) -> torch.Tensor:
    """Binary (H, W) mask with a fraction ``missing`` of pixels set to 0, seeded."""
    if not 0 <= missing < 1:
        raise ValueError("missing fraction must be in [0, 1)")
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) >= missing).float()


class Downsampling(LinearOperator):
    """A x = S_k (h * x): anti-aliasing Gaussian filter h then decimation by ``factor``.

    ``h`` is a Gaussian of std ``0.5 * factor`` (circular convolution), ``S_k``
    keeps one pixel in ``factor`` along each axis (the top-left one of each
    block). The image side must be a multiple of ``factor``. ``A^T`` inserts
    zeros then filters; ``init`` is a bicubic upsampling of ``y``.
    """

    def __init__(self, factor: int, filter_sigma: float | None = None) -> None:
        if int(factor) != factor or factor < 1:
            raise ValueError("downsampling factor must be a positive integer")
        super().__init__()
        self.factor = int(factor)
        sigma = 0.5 * self.factor if filter_sigma is None else filter_sigma
        self.blur = Blur(gaussian_kernel(sigma)) if self.factor > 1 else None

    def A(self, x: torch.Tensor) -> torch.Tensor:
        k = self.factor
        if x.shape[-2] % k or x.shape[-1] % k:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be multiples of the factor {k}")
        if self.blur is None:
            return x
        return self.blur.A(x)[..., ::k, ::k]

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        k = self.factor
        if self.blur is None:
            return y
        up = y.new_zeros(*y.shape[:-2], y.shape[-2] * k, y.shape[-1] * k)
        up[..., ::k, ::k] = y
        return self.blur.A_adjoint(up)

    def init(self, y: torch.Tensor) -> torch.Tensor:
        """Bicubic upsampling of ``y``."""
        if self.factor == 1:
            return y
        return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=False)

    def check_measurement(self, y: torch.Tensor) -> None:
        """The base checks, and an image (``factor`` times ``y``) no smaller than the filter."""
        super().check_measurement(y)
        if self.blur is not None and max(self.blur.kernel.shape) > self.factor * min(y.shape[-2:]):
            k = self.blur.kernel.shape
            raise ValueError(f"super-resolution by {self.factor} of a {y.shape[-2]}x{y.shape[-1]} measurement: its "
                             f"{k[0]}x{k[1]} anti-aliasing filter is larger than the image it restores")

    def lipschitz(self) -> float:
        """``||A^T A|| = ||A A^T||``, exactly: ``A A^T`` filters the coarse grid with the filter's
        autocorrelation taken every ``factor`` pixels, a nonnegative kernel, whose norm is its sum
        (about ``1 / factor^2`` for the default filter)."""
        if self.blur is None:
            return 1.0
        k = self.blur.kernel.double()
        kh, kw = k.shape
        auto = F.conv2d(k[None, None], k[None, None], padding=(kh - 1, kw - 1))[0, 0]  # centre (kh-1, kw-1)
        f = self.factor
        return float(auto[(kh - 1) % f::f, (kw - 1) % f::f].sum())
