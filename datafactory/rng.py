"""Seeded random streams: every random choice of sample ``index`` derives from ``(seed, index)``.

There is no global RNG state. Each stage of a sample draws from its own stream, so a
change in how one stage consumes randomness leaves the others untouched.
"""

import numpy as np

#: The largest run seed any command takes: every library the seed reaches (NumPy's legacy
#: generators, scikit-learn's ``random_state``, torch) accepts 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1

#: Named streams of one sample. Values are part of the data format: never renumber.
STREAMS = {"params": 0, "structure": 1, "thermal": 2, "phonons": 3, "style": 4, "augment": 5, "split": 6}


def sample_rng(seed: int, index: int, stream: str) -> np.random.Generator:
    """Generator for one stage of sample ``index`` of a run seeded with ``seed``.

    Parameters
    ----------
    seed : int
        Run seed (>= 0).
    index : int
        Sample index (>= 0).
    stream : str
        One of :data:`STREAMS`.
    """
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index), STREAMS[stream]))
    return np.random.default_rng(sequence)


def derived_seed(rng: np.random.Generator) -> int:
    """A 31-bit integer seed for a library that wants an int (e.g. abTEM's frozen phonons)."""
    return int(rng.integers(0, 2**31 - 1))
