"""Host grouping speed: peaklayers.identity vs one scipy solver call per group.

Run: ``python benchmarks/bench_identity.py [--repeats 15]``. Prints two Markdown tables.

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

The second table times :func:`peaklayers.identity.classify_peaks_from_maps` (class-map
lookup, then grouping) beside the reference library's approach (a gather of every
peak's pixel from class maps moved to channels-last, then a boolean mask over all peaks
and one solver call per (sample, channel) pair) and beside one ``class_maps.clone()``.
"""

import argparse
import timeit

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from peaklayers.identity import classify_peaks_from_maps, group_class_peaks


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


def reference_classify(class_maps, points, vals, sample_inds, channel_inds, n_channels):
    """The reference library's classify_peaks_from_maps, as it works: channels-last
    maps, one gather, then a boolean mask over all peaks per (sample, channel) pair."""
    n_samples, n_classes = class_maps.shape[0], class_maps.shape[1]
    by_pixel = class_maps.permute(0, 2, 3, 1)
    subs = torch.round(points.flip(1)).to(torch.int64)
    probs = by_pixel[sample_inds.to(torch.int64), subs[:, 0], subs[:, 1]]
    out_points = torch.full((n_samples, n_classes, n_channels, 2), float("nan"))
    out_vals = torch.full((n_samples, n_classes, n_channels), float("nan"))
    out_probs = torch.full((n_samples, n_classes, n_channels), float("nan"))
    for s in range(n_samples):
        for c in range(n_channels):
            mask = (sample_inds == s) & (channel_inds == c)
            if not bool(mask.any()):
                continue
            group = probs[mask]
            rows, cols = linear_sum_assignment(group.numpy(), maximize=True)
            rows, cols = torch.from_numpy(rows), torch.from_numpy(cols)
            keep = group[rows, cols] == group[rows].max(dim=1).values
            rows, cols = rows[keep], cols[keep]
            out_points[s, cols, c] = points[mask][rows]
            out_vals[s, cols, c] = vals[mask][rows]
            out_probs[s, cols, c] = group[rows, cols]
    return out_points, out_vals, out_probs


def class_map_peaks(samples=32, channels=17, classes=4, height=128, width=128, seed=0):
    """Class maps (softmax of noise) and about K peaks per (sample, channel)."""
    gen = torch.Generator().manual_seed(seed)
    class_maps = torch.softmax(3 * torch.randn(samples, classes, height, width, generator=gen), 1)
    _, sample_inds, channel_inds = make_peaks(samples, channels, classes, seed)
    count = len(sample_inds)
    points = torch.rand(count, 2, generator=gen) * torch.tensor([width - 1.0, height - 1.0])
    vals = torch.rand(count, generator=gen)
    return class_maps, points, vals, torch.from_numpy(sample_inds), torch.from_numpy(channel_inds)


def classify_table(repeats, shape=(32, 17, 4, 128, 128)):
    samples, channels, classes, height, width = shape
    maps, points, vals, sample_inds, channel_inds = class_map_peaks(*shape)
    call = (maps, points, vals, sample_inds, channel_inds, channels)
    ours, ref = classify_peaks_from_maps(*call), reference_classify(*call)
    for a, b in zip(ours, ref, strict=True):  # a sanity check, not the test suite
        assert torch.equal(a.isnan(), b.isnan())
    t_clone = median_ms(lambda: maps.clone(), repeats)
    t_ref = median_ms(lambda: reference_classify(*call), repeats)
    t_ours = median_ms(lambda: classify_peaks_from_maps(*call), repeats)
    return "\n".join([
        "| class maps | peaks | reference loop (ms) | peaklayers (ms) | speed-up "
        "| class_maps.clone() (ms) | peaklayers / clone |",
        "|---|---|---|---|---|---|---|",
        f"| ({samples}, {classes}, {height}, {width}), {channels} channels | {len(vals)} "
        f"| {t_ref:.2f} | {t_ours:.3f} | {t_ref / t_ours:.1f}x | {t_clone:.3f} "
        f"| {t_ours / t_clone:.2f} |",
    ])


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
    print()
    print(classify_table(args.repeats))


if __name__ == "__main__":
    main()
