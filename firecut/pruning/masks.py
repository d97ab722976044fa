"""Keep masks as 8-character bit strings, F2 first: '11111111' keeps every Fire module."""

from __future__ import annotations

import itertools
import random

from firecut.pruning.schedules import FIRE_NAMES

ALL_MASKS = ["".join(bits) for bits in itertools.product("10", repeat=len(FIRE_NAMES))]  # 256


def bits_of(keep: tuple[str, ...] | list[str]) -> str:
    """('fire2', 'fire5') -> '10010000' (F2 first)."""
    return "".join("1" if m in keep else "0" for m in FIRE_NAMES)


def keep_of(bits: str) -> tuple[str, ...]:
    return tuple(m for m, b in zip(FIRE_NAMES, bits, strict=True) if b == "1")


def params_of(bits: str) -> dict[str, int]:
    """'10000001' -> {'fire2': 1, 'fire3': 0, ..., 'fire9': 1}: the trial's Optuna params."""
    return {m: int(b) for m, b in zip(FIRE_NAMES, bits, strict=True)}


def pattern(bits: str) -> str:
    return "".join("✓" if b == "1" else "–" for b in bits)


def hamming(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def nearest_free(bits: str, taken: set[str], rng: random.Random) -> str | None:
    """An untaken mask at the smallest Hamming distance from `bits` (ties: random)."""
    for d in range(1, len(bits) + 1):
        free = [m for m in ALL_MASKS if m not in taken and hamming(m, bits) == d]
        if free:
            return rng.choice(sorted(free))
    return None


def mask_of(t) -> str | None:
    """An Optuna trial's mask: its `mask` attribute, else its (fixed) params; None if unset."""
    if t.user_attrs.get("mask"):
        return t.user_attrs["mask"]
    params = t.system_attrs.get("fixed_params") or t.params
    if len(params) == len(FIRE_NAMES):
        return "".join(str(int(params[m])) for m in FIRE_NAMES)
    return None
