"""Forward-pass precision: the names a run may choose (no torch import, so option parsing stays fast).

``fp32`` is the default and the paper's setting; ``bf16`` and ``fp16`` run the backbone's forward
pass under autocast on its device (``scopebench.device.autocast``), and the stored tokens are
cast back to float32 (or the storage dtype).  A reduced precision changes the numbers, so it
enters the activation cache key and the result files; fp32 is left out of the cache key, so
entries written before the option existed keep their keys.
"""
from __future__ import annotations

from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"


def with_precision(key: dict[str, Any], precision: str) -> dict[str, Any]:
    """``key`` with ``precision`` in it unless it is the default: keys written before the option keep their form."""
    return key if precision == DEFAULT_PRECISION else {**key, "precision": precision}


def check_precision(value: str) -> str:
    """``value`` if it names a precision, else a ``ValueError`` listing the choices."""
    if value not in PRECISIONS:
        raise ValueError(f"precision {value!r} is not one of {PRECISIONS}; fp32 is the paper's setting, bf16/fp16 "
                         "run the forward pass under autocast")
    return value
