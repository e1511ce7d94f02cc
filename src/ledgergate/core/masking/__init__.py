"""Masking in flight: content detectors, mask functions and (in ``plan``) the per-result
plans that apply them to rows. Pure: no I/O, clock or logging anywhere below.

The plan module is not imported here: it depends on the wire codec's result shapes, and
a caller that only scans or masks values should not pull that in.
"""

from ledgergate.core.masking.detectors import (
    DETECTORS,
    Detector,
    Hit,
    RegexDetector,
    get,
    register,
    scan,
)
from ledgergate.core.masking.functions import REDACTED, MaskSpec, mask_hits, mask_value

__all__ = [
    "DETECTORS",
    "REDACTED",
    "Detector",
    "Hit",
    "MaskSpec",
    "RegexDetector",
    "get",
    "mask_hits",
    "mask_value",
    "register",
    "scan",
]
