"""Baseline upsamplers the model must beat: sinc interpolation (soxr VHQ) and cubic spline.

Both take a low-res mono signal ``[time]`` at ``rate_in`` Hz and return ``[time * factor]``
float32 at ``rate_out`` Hz (``factor = rate_out // rate_in``), like the model.
"""

from __future__ import annotations

import numpy as np
import soxr
from scipy.interpolate import CubicSpline


def sinc(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited (windowed-sinc) interpolation with soxr at very high quality."""
    n = len(x) * (rate_out // rate_in)
    y = soxr.resample(np.asarray(x, dtype=np.float32), rate_in, rate_out, quality="VHQ")
    return np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)


def spline(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Cubic-spline interpolation through the low-res samples (held constant past the last one)."""
    factor = rate_out // rate_in
    t_in = np.arange(len(x), dtype=np.float64)
    t_out = np.arange(len(x) * factor, dtype=np.float64) / factor
    y = CubicSpline(t_in, np.asarray(x, dtype=np.float64))(np.minimum(t_out, t_in[-1]))
    return y.astype(np.float32)


BASELINES = {"sinc": sinc, "spline": spline}
