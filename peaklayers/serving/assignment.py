"""Batched exact assignment of peaks to classes (SPEC §3.1 step 2, §3.2).

In each group, peaks are matched to classes so that the summed probability is largest,
with ``min(n_peaks, K)`` pairs, like ``scipy.optimize.linear_sum_assignment(probs,
maximize=True)``. Instead of a solver call per group, groups are solved together
(:func:`_assign_groups`):

1. groups whose peaks each have one strictly best class, all different, are
   solved by that argmax (it reaches the upper bound, the sum of row maxima, and
   is the only assignment that does);
2. the others are bucketed by peak count ``n``; a bucket whose assignments are few
   (at most :data:`MAX_ENUMERATED`, e.g. all ``n <= 5`` for ``K = 5``) is solved by
   scoring every assignment at once; larger ones by a dynamic programme over the
   set of used classes (``K <= MAX_DP_CLASSES``), batched over the groups;
3. anything larger still goes to ``linear_sum_assignment``, one group at a time.

Tie rule (deterministic, whatever the path for ``K <= MAX_DP_CLASSES``): among the
assignments with the largest total, take the one whose sequence of classes, read
over the group's peaks in input order, is lexicographically smallest, "unassigned"
counting as after every class. In words: the first peak gets the lowest class it can
have in an optimal assignment, then the second peak, and so on, and a peak is left
out only when it must be. Totals are float64 sums of the probabilities, so a tie is
exact equality of those sums (for float32/float16 probabilities the sums are exact
unless non-zero probabilities below about 1e-8 are involved). Groups solved by scipy
(``K > MAX_DP_CLASSES`` with large groups) get scipy's optimal choice: equal total,
deterministic, but not necessarily this rule.

The public functions taking these groups are in :mod:`peaklayers.identity`.
"""

import itertools
from functools import lru_cache

import numpy as np

#: Largest number of candidate assignments of one bucket scored by enumeration.
MAX_ENUMERATED = 720
#: Largest class count solved by the batched dynamic programme (2**K states).
MAX_DP_CLASSES = 12
# Elements (groups x states x choices) of one batched DP step; bounds its memory.
_DP_CHUNK_ELEMENTS = 1 << 21


@lru_cache(maxsize=64)
def _assignment_table(n: int, k: int) -> np.ndarray:
    """Every assignment of ``n`` peaks to ``k`` classes with ``min(n, k)`` pairs.

    Returns:
        ndarray[A, n], int64: the class of each peak, ``k`` for unassigned, rows in
        lexicographic order (so the first optimal row follows the tie rule).
    """
    if n <= k:
        return np.array(list(itertools.permutations(range(k), n)), dtype=np.int64).reshape(-1, n)
    rows = []
    for peaks in itertools.permutations(range(n), k):  # class c goes to peak peaks[c]
        row = [k] * n
        for c, p in enumerate(peaks):
            row[p] = c
        rows.append(row)
    return np.array(sorted(rows), dtype=np.int64)


def _assignment_count(n: int, k: int) -> int:
    big, small = max(n, k), min(n, k)
    count = 1
    for i in range(small):
        count *= big - i
        if count > MAX_ENUMERATED:
            break
    return count


def _solve_enumerated(probs: np.ndarray) -> np.ndarray:
    """Exact assignment by scoring every candidate.

    Args:
        probs (ndarray[G, n, K], float64): ``G`` groups of ``n`` peaks.

    Returns:
        ndarray[G, n], int64: class of each peak, -1 unassigned.
    """
    groups, n, k = probs.shape
    table = _assignment_table(n, k)
    # A zero column for "unassigned", then flat indices into each group's (n, K + 1).
    padded = np.concatenate([probs, np.zeros((groups, n, 1))], axis=2).reshape(groups, -1)
    flat = table + np.arange(n)[None, :] * (k + 1)
    # Summed peak by peak, in input order: deterministic float64 totals.
    totals = padded[:, flat[:, 0]]
    for i in range(1, n):
        totals += padded[:, flat[:, i]]
    best = table[totals.argmax(axis=1)]  # first maximum: the lexicographically first
    return np.where(best < k, best, -1)


@lru_cache(maxsize=16)
def _dp_tables(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``next[mask, c]`` = ``mask | 1 << c`` (or the sentinel ``2**k`` if c is used), popcounts."""
    masks = np.arange(1 << k)
    bits = 1 << np.arange(k)
    used = (masks[:, None] & bits[None, :]) != 0
    following = np.where(used, 1 << k, masks[:, None] | bits[None, :])
    popcount = used.sum(axis=1)
    return following, popcount


def _solve_dp(probs: np.ndarray) -> np.ndarray:
    """Exact assignment by dynamic programming over the set of used classes.

    ``best[i][used]`` is the largest total the peaks ``i..n-1`` can add when the
    classes in ``used`` are taken; each peak takes a free class or none, and the end
    state must use ``min(n, K)`` classes. Walking forward from the empty set and taking
    the first best choice (classes in order, "none" last) gives the tie rule.

    Args:
        probs (ndarray[G, n, K], float64).

    Returns:
        ndarray[G, n], int64: class of each peak, -1 unassigned.
    """
    groups, n, k = probs.shape
    following, popcount = _dp_tables(k)
    states = 1 << k
    chunk = max(1, _DP_CHUNK_ELEMENTS // (states * (k + 1)))
    result = np.empty((groups, n), dtype=np.int64)
    for start in range(0, groups, chunk):
        part = probs[start:start + chunk]
        count = part.shape[0]
        # The sentinel state (index 2**k) is unreachable: -inf.
        final = np.where(popcount == min(n, k), 0.0, -np.inf)
        best = np.broadcast_to(np.append(final, -np.inf), (count, states + 1))
        choices = np.empty((n, count, states), dtype=np.int8 if k < 127 else np.int16)
        candidates = np.empty((count, states, k + 1))
        for i in range(n - 1, -1, -1):
            candidates[:, :, :k] = best[:, following] + part[:, i, None, :]
            candidates[:, :, k] = best[:, :states]
            choice = candidates.argmax(axis=2)
            choices[i] = choice
            step = np.take_along_axis(candidates, choice[:, :, None], axis=2)[:, :, 0]
            best = np.concatenate([step, np.full((count, 1), -np.inf)], axis=1)
        used = np.zeros(count, dtype=np.int64)
        rows = np.arange(count)
        for i in range(n):
            choice = choices[i, rows, used].astype(np.int64)
            taken = choice < k
            result[start + rows, i] = np.where(taken, choice, -1)
            used = np.where(taken, used | (1 << np.minimum(choice, k - 1)), used)
    return result


def _solve_scipy(probs: np.ndarray) -> np.ndarray:
    """One ``linear_sum_assignment`` per group (large problems only)."""
    from scipy.optimize import linear_sum_assignment  # the only use of scipy: imported here

    groups, n, _ = probs.shape
    result = np.full((groups, n), -1, dtype=np.int64)
    for g in range(groups):
        rows, cols = linear_sum_assignment(probs[g], maximize=True)
        result[g, rows] = cols
    return result


def _solve_bucket(probs: np.ndarray) -> np.ndarray:
    """Exact assignment of ``G`` groups of equal size. ndarray[G, n, K] -> ndarray[G, n]."""
    _, n, k = probs.shape
    if _assignment_count(n, k) <= MAX_ENUMERATED:
        return _solve_enumerated(probs)
    if k <= MAX_DP_CLASSES:
        return _solve_dp(probs)
    return _solve_scipy(probs)


def _assign_groups(
    probs: np.ndarray, keys: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal assignment of peaks to classes within each group (module docstring).

    Args:
        probs (ndarray[N, K], float): class probabilities of each peak, finite.
        keys (ndarray[N], int64): group of each peak, in ``[0, n_groups)``.
        n_groups (int): number of groups.

    Returns:
        assigned (ndarray[N], int64): the class of each peak, -1 for none.
        order (ndarray[N], int64): the peaks sorted by group, stably.
    """
    n_peaks, k = probs.shape
    assigned = np.full(n_peaks, -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    if n_peaks == 0 or k == 0:
        return assigned, order
    # Work in group order; the stable sort keeps the input order of peaks in a group.
    sorted_keys = keys[order]
    sorted_probs = probs[order].astype(np.float64, copy=False)
    counts = np.bincount(sorted_keys, minlength=n_groups)
    sizes = counts[sorted_keys]  # size of each peak's group
    out = np.full(n_peaks, -1, dtype=np.int64)

    # 1. Each peak has one strictly best class and those differ within the group: the
    # argmax reaches the upper bound (sum of row maxima), uniquely. Only n <= K.
    top = sorted_probs.argmax(axis=1)
    top_val = sorted_probs[np.arange(n_peaks), top]
    single = np.count_nonzero(sorted_probs == top_val[:, None], axis=1) == 1
    clash = np.bincount(sorted_keys * k + top, minlength=n_groups * k).reshape(n_groups, k)
    easy_group = (clash.max(axis=1) <= 1) & (counts <= k)
    easy_group &= np.bincount(sorted_keys[~single], minlength=n_groups) == 0
    easy = easy_group[sorted_keys]
    out[easy] = top[easy]

    # 1b. The same with the roles swapped for n >= K: each class has one strictly best
    # peak and those differ; the bound is the sum of column maxima. Groups are contiguous.
    wide = (counts > k)[sorted_keys]
    if wide.any():
        wide_keys = sorted_keys[wide]
        wide_probs = sorted_probs[wide]
        first = np.flatnonzero(np.r_[True, wide_keys[1:] != wide_keys[:-1]])
        col_max = np.maximum.reduceat(wide_probs, first, axis=0)
        group_of = np.cumsum(np.r_[False, wide_keys[1:] != wide_keys[:-1]])
        best_of = wide_probs == col_max[group_of]  # (peak, class): peak is a best for class
        unique_best = (np.add.reduceat(best_of, first, axis=0) == 1).all(axis=1)
        one_class = np.add.reduceat(np.count_nonzero(best_of, axis=1) <= 1, first) == np.diff(
            np.r_[first, wide_keys.shape[0]]
        )
        solved = (unique_best & one_class)[group_of]
        cls = np.where(best_of.any(axis=1), best_of.argmax(axis=1), -1)
        wide_out = np.where(solved, cls, -1)
        positions = np.flatnonzero(wide)
        out[positions[solved]] = wide_out[solved]
        easy[positions[solved]] = True

    # 2. The rest by group size, each size solved for all its groups at once.
    hard = ~easy
    if hard.any():
        for n in np.unique(sizes[hard]):
            members = hard & (sizes == n)
            bucket = sorted_probs[members].reshape(-1, int(n), k)
            out[members] = _solve_bucket(bucket).reshape(-1)
    assigned[order] = out
    return assigned, order
