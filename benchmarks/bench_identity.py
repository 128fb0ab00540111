"""Host grouping speed: peaklayers.identity vs one scipy solver call per group.

Run: ``python benchmarks/bench_identity.py [--repeats 15]``. Prints a Markdown table.

Every configuration is timed in the same run, on the same peaks, for:

- ``scipy loop``: the plain approach done well: peaks sorted by group once, then one
  ``linear_sum_assignment`` per (sample, channel) group, then the best-class filter.
- ``per-pair mask loop``: the reference library's approach: for every (sample,
  channel) pair, a boolean mask over all peaks (torch), then the solver.
- ``peaklayers``: :func:`peaklayers.identity.group_class_peaks` (validation included).

Peaks are "realistic": per group about K peaks (10 % of groups one fewer, 10 % one
more), each true peak with probabilities concentrated on its own identity
(Dirichlet, occasionally confused), extra peaks with flat random probabilities. The
``uniform`` rows draw every probability uniformly at random instead: no peak has a
clear class, the worst case for the vectorised solver's shortcut.
Times are medians over repeats; the speed-ups are ratios of those medians.
"""

import argparse
import timeit

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from peaklayers.identity import group_class_peaks


def make_peaks(samples, channels, classes, seed=0, uniform=False):
    rng = np.random.default_rng(seed)
    probs, sample_inds, channel_inds = [], [], []
    for s in range(samples):
        frame = []
        for c in range(channels):
            extra = rng.choice([-1, 0, 1], p=[0.1, 0.8, 0.1]) if classes > 1 else 0
            identities = list(rng.permutation(classes))[: classes + min(extra, 0)]
            for k in identities:
                alpha = np.full(classes, 0.3)
                alpha[k] += 8.0
                frame.append((c, rng.dirichlet(alpha)))
            for _ in range(max(extra, 0)):
                frame.append((c, rng.dirichlet(np.ones(classes))))
        # Peaks of a frame come in image order, not grouped by channel.
        for i in rng.permutation(len(frame)):
            c, p = frame[i]
            probs.append(rng.random(classes) if uniform else p)
            sample_inds.append(s)
            channel_inds.append(c)
    return (
        np.array(probs, dtype=np.float32),
        np.array(sample_inds, dtype=np.int32),
        np.array(channel_inds, dtype=np.int32),
    )


def scipy_loop(probs, sample_inds, channel_inds, n_samples, n_channels):
    keys = sample_inds.astype(np.int64) * n_channels + channel_inds
    order = np.argsort(keys, kind="stable")
    ends = np.cumsum(np.bincount(keys, minlength=n_samples * n_channels))
    sorted_probs = probs[order]
    peak_inds, class_inds = [], []
    start = 0
    for end in ends:
        if end > start:
            rows, cols = linear_sum_assignment(sorted_probs[start:end], maximize=True)
            peak_inds.append(order[start + rows])
            class_inds.append(cols)
        start = end
    peak_inds = np.concatenate(peak_inds) if peak_inds else np.empty(0, np.int64)
    class_inds = np.concatenate(class_inds) if class_inds else np.empty(0, np.int64)
    keep = probs[peak_inds, class_inds] == probs[peak_inds].max(axis=1)
    return peak_inds[keep], class_inds[keep]


def mask_loop(probs, sample_inds, channel_inds, n_samples, n_channels):
    probs, sample_inds, channel_inds = map(torch.from_numpy, (probs, sample_inds, channel_inds))
    peak_inds, class_inds = [], []
    for s in range(n_samples):
        for c in range(n_channels):
            mask = (sample_inds == s) & (channel_inds == c)
            if not bool(mask.any()):
                continue
            rows, cols = linear_sum_assignment(probs[mask].numpy(), maximize=True)
            peak_inds.append(torch.nonzero(mask).squeeze(1)[torch.from_numpy(rows)])
            class_inds.append(torch.from_numpy(cols))
    peak_inds, class_inds = torch.cat(peak_inds), torch.cat(class_inds)
    keep = probs[peak_inds, class_inds] == probs[peak_inds].max(dim=1).values
    return peak_inds[keep], class_inds[keep]


def median_ms(fn, repeats):
    once = timeit.timeit(fn, number=1)
    number = max(1, int(0.05 / max(once, 1e-6)))
    times = timeit.repeat(fn, number=number, repeat=repeats)
    return float(np.median(times)) / number * 1e3


def total(probs, peak_inds, class_inds):
    return float(np.asarray(probs, np.float64)[np.asarray(peak_inds), np.asarray(class_inds)].sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    configs = [(8, 17, 2, False), (32, 17, 5, False), (64, 17, 5, False), (32, 17, 5, True)]
    print("| frames x channels x classes | probabilities | peaks | scipy loop (ms) "
          "| per-pair mask loop (ms) | peaklayers (ms) | speed-up vs scipy loop "
          "| vs mask loop |")
    print("|---|---|---|---|---|---|---|---|")
    for samples, channels, classes, uniform in configs:
        probs, sample_inds, channel_inds = make_peaks(samples, channels, classes, uniform=uniform)
        call = (probs, sample_inds, channel_inds, samples, channels)
        # Same optimal totals (a sanity check, not the test suite).
        ours, ref = group_class_peaks(*call), scipy_loop(*call)
        assert abs(total(probs, *ours) - total(probs, *ref)) < 1e-6
        t_loop = median_ms(lambda call=call: scipy_loop(*call), args.repeats)
        t_mask = median_ms(lambda call=call: mask_loop(*call), args.repeats)
        t_ours = median_ms(lambda call=call: group_class_peaks(*call), args.repeats)
        print(f"| {samples} x {channels} x {classes} | {'uniform' if uniform else 'realistic'} "
              f"| {len(probs)} | {t_loop:.2f} | {t_mask:.2f} | {t_ours:.3f} "
              f"| {t_loop / t_ours:.1f}x | {t_mask / t_ours:.1f}x |")


if __name__ == "__main__":
    main()
