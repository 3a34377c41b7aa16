"""The random-number state that loaded code and direct calls pass to kernels drawing with
kl.random (the front end's kiln.lang.random says what the kernel does with it): a u32[4] array
of seed lo, seed hi, run counter lo, run counter hi, in the hidden parameter kiln.abi.RNG_PARAM."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.abi import RNG_PARAM


def new_rng_state(seed: int) -> np.ndarray:
    """The state of `seed` (an int in [0, 2**64)) at the start of its stream."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2 ** 64:
        raise ValueError(f"a random seed is an integer in [0, 2**64), got {seed!r}")
    s = int(seed)
    return np.array([s & 0xFFFFFFFF, s >> 32, 0, 0], np.uint32)


def draws(params: Any) -> bool:
    """Whether a kernel or graph with these manifest params takes the state."""
    return any(p.layout.name == RNG_PARAM for p in params)


def with_rng(args: Mapping[str, Any], state: np.ndarray) -> Mapping[str, Any]:
    """`args` plus `state` as the hidden parameter, unless the caller passes their own."""
    return args if RNG_PARAM in args else {**args, RNG_PARAM: state}
