"""Kubernetes resource quantities ("500m", "2", "4Gi", "1e3") as numbers in the resource's base
unit (cores, bytes, devices), for the compute a trial requests (workloads/requests.py) and spends
(spend.py). Only the operator's own arithmetic reads them this way; what the API server stores is
never rewritten."""

from __future__ import annotations

import re
from decimal import Decimal

# The suffixes of resource.Quantity: binary (Ki = 2^10, ...), decimal (m = 10^-3, k = 10^3, ...).
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)}
_DECIMAL.update({"k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12")})
_DECIMAL.update({"P": Decimal("1e15"), "E": Decimal("1e18")})
# A signed decimal number, then one suffix or an exponent (as the API server's grammar has it).
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[eE][+-]?[0-9]+)|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")
# Quantities the API server accepts are short; longer text is refused before any arithmetic.
MAX_QUANTITY_LENGTH = 64


class QuantityError(ValueError):
    """Text that is not a Kubernetes quantity."""


def parse(value: object) -> float:
    """A quantity (text, or a number as YAML may give it) in its base unit."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if len(text) > MAX_QUANTITY_LENGTH:
        raise QuantityError(f"{text[:MAX_QUANTITY_LENGTH]}… is not a quantity")
    match = _QUANTITY.match(text)
    if match is None:
        raise QuantityError(f"{text!r} is not a quantity")
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
        if len(suffix) > 1 and suffix[0] in "eE":  # an exponent (a lone E is exa)
            amount *= Decimal(10) ** int(suffix[1:])
        elif suffix in _BINARY:
            amount *= _BINARY[suffix]
        else:
            amount *= _DECIMAL[suffix]
    except (ArithmeticError, ValueError):  # decimal's Overflow and InvalidOperation among them
        raise QuantityError(f"{text!r} is not a quantity") from None
    return float(amount)
