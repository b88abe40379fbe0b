"""Kubernetes resource quantities ("500m", "2", "512Mi", "1e9"), read as Kubernetes reads them
(https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)."""

from __future__ import annotations

import re

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?([A-Za-z]{0,2})$")


def cpus(value: str | float) -> float:
    """A CPU quantity ("500m", "2", 1.5) as a number of CPUs; ValueError saying why if it is not one."""
    text = str(value).strip()
    try:
        amount = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a CPU quantity; use e.g. 500m or 2") from None
    if amount <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return amount


def memory_bytes(value: str) -> int:
    """A memory quantity ("512Mi", "1G", "1e9") in bytes; ValueError saying why if it is not one."""
    match = _QUANTITY.match(str(value).strip())
    suffix = match.group(3) if match else None
    if match is None or (suffix not in _BINARY and suffix not in _DECIMAL):
        raise ValueError(f"{value!r} is not a memory quantity; use e.g. 512Mi or 1Gi")
    number = float(match.group(1)) * 10 ** int(match.group(2) or 0)
    amount = int(number * _BINARY.get(suffix, _DECIMAL.get(suffix, 1)))
    if amount <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return amount
