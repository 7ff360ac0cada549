"""Numba kernels behind :mod:`xrdsynth.diffraction` (pure functions on numpy arrays).

They reproduce pymatgen 2026.10.24 ``XRDCalculator.get_pattern``; the thin typed wrapper and the
pymatgen-identical numpy steps (arcsin, degrees, binning keys) live in ``diffraction.py``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# pymatgen.optimization.neighbors.find_points_in_spheres: numerical tolerance added to r**2 and to the box
# bounds, and the radius below which it searches with this radius and then keeps distances <= r.
_NEIGHBOR_TOL = 1e-8
_NEIGHBOR_MIN_R = 1.0


@njit(cache=True)
def _l_search_range(c0x, c0y, c0z, rx, ry, rz, r_search, l_max):
    """Integer l-interval that can hold points with |c0 + l*r_vec| <= r_search (a superset, widened by 1)."""
    a = rx * rx + ry * ry + rz * rz
    b = 2.0 * (c0x * rx + c0y * ry + c0z * rz)
    c = c0x * c0x + c0y * c0y + c0z * c0z - r_search * r_search
    disc = b * b - 4.0 * a * c
    if disc < 0.0:
        return 1, 0
    root = math.sqrt(disc)
    lo = max(-l_max, int(math.floor((-b - root) / (2.0 * a))) - 1)
    hi = min(l_max, int(math.ceil((-b + root) / (2.0 * a))) + 1)
    return lo, hi


@njit(cache=True)
def _half_sphere_pass(recip, hkl_max, max_r, min_r, hkl_out, g_out, fill):
    """Walk the Friedel half-space; count (fill=False) or store (fill=True) the accepted points.

    Acceptance replicates find_points_in_spheres bit for bit: cartesian components summed as
    h*a* + k*b* + l*c*, squared distance summed x, y, z, box |x_i| < r + tol, d2 < r**2 + tol (for r < 1:
    search radius 1 + tol, then sqrt(d2) <= r). XRDCalculator then keeps g >= min_r when min_r != 0.
    """
    small = max_r < _NEIGHBOR_MIN_R
    r_eff = _NEIGHBOR_MIN_R + _NEIGHBOR_TOL if small else max_r
    r2_cut = r_eff * r_eff + _NEIGHBOR_TOL
    box = r_eff + _NEIGHBOR_TOL
    # Loose radius only bounds the l loop; the exact test below decides.
    r_search = r_eff * (1.0 + 1e-6) + 1e-6
    h_max, k_max, l_max = hkl_max[0], hkl_max[1], hkl_max[2]
    n = 0
    for h in range(0, h_max + 1):
        k_lo = 0 if h == 0 else -k_max
        for k in range(k_lo, k_max + 1):
            c0x = float(h) * recip[0, 0] + float(k) * recip[1, 0]
            c0y = float(h) * recip[0, 1] + float(k) * recip[1, 1]
            c0z = float(h) * recip[0, 2] + float(k) * recip[1, 2]
            lo, hi = _l_search_range(c0x, c0y, c0z, recip[2, 0], recip[2, 1], recip[2, 2], r_search, l_max)
            if h == 0 and k == 0:
                lo = max(lo, 1)
            for ell in range(lo, hi + 1):
                x = c0x + float(ell) * recip[2, 0]
                y = c0y + float(ell) * recip[2, 1]
                z = c0z + float(ell) * recip[2, 2]
                if not (-box < x < box and -box < y < box and -box < z < box):
                    continue
                d2 = x * x + y * y + z * z
                if not d2 < r2_cut:
                    continue
                g = math.sqrt(d2)
                if small and not g <= max_r:
                    continue
                if min_r != 0.0 and not g >= min_r:
                    continue
                if fill:
                    hkl_out[n, 0] = h
                    hkl_out[n, 1] = k
                    hkl_out[n, 2] = ell
                    g_out[n] = g
                n += 1
    return n


@njit(cache=True)
def half_sphere_points(recip, hkl_max, max_r, min_r):
    """Reciprocal points with min_r <= |g| <= max_r (1/Å) and (h, k, l) lexicographically positive.

    ``recip`` rows are a*, b*, c* in 1/Å (no 2 pi); ``hkl_max`` (3,) bounds |h|, |k|, |l|.
    Returns (hkl (M, 3) int64, g (M,) float64) in enumeration order.
    """
    dummy_hkl = np.empty((0, 3), dtype=np.int64)
    dummy_g = np.empty(0, dtype=np.float64)
    n = _half_sphere_pass(recip, hkl_max, max_r, min_r, dummy_hkl, dummy_g, False)
    hkl = np.empty((n, 3), dtype=np.int64)
    g = np.empty(n, dtype=np.float64)
    _half_sphere_pass(recip, hkl_max, max_r, min_r, hkl, g, True)
    return hkl, g


@njit(cache=True)
def _axis_phase_table(coords, index_min, index_max):
    """cos and sin of 2 pi x_j n for integer n in [index_min, index_max]: two (n_index, n_entries) arrays."""
    n_entries = coords.shape[0]
    n_index = index_max - index_min + 1
    table_re = np.empty((n_index, n_entries), dtype=np.float64)
    table_im = np.empty((n_index, n_entries), dtype=np.float64)
    for i in range(n_index):
        for j in range(n_entries):
            angle = 2.0 * math.pi * coords[j] * float(index_min + i)
            table_re[i, j] = math.cos(angle)
            table_im[i, j] = math.sin(angle)
    return table_re, table_im


# Reassociation lets LLVM vectorise the sums over atoms; it changes only the rounding of |F|**2 (~1e-15).
@njit(cache=True, fastmath={"reassoc", "contract", "nsz"})
def _phase_sum(weight_re, weight_im, row_re, row_im):
    """sum_j w_j t_j for complex w (split re/im) and t (a phase-table row), all of equal length.

    Callers pass slices so that j runs from 0: numba then emits no negative-index wraparound and the
    loop vectorises with contiguous loads instead of gathers.
    """
    s_re = 0.0
    s_im = 0.0
    for j in range(weight_re.shape[0]):
        s_re += weight_re[j] * row_re[j] - weight_im[j] * row_im[j]
        s_im += weight_re[j] * row_im[j] + weight_im[j] * row_re[j]
    return s_re, s_im


@njit(cache=True)
def structure_factor_squared(hkl, form_factor, frac_coords, occupancy, element_start, ustar):
    """|F(hkl)|**2 in electrons**2 for F = sum_e f_e(hkl) sum_j occ_j T_j(hkl) exp(2 pi i hkl.r_j).

    Entries (one per site and species) are grouped by element: element e owns entries
    element_start[e]:element_start[e + 1]. ``form_factor`` (n_elements, M) holds f_e per point (with any
    isotropic Debye-Waller factor). T_j = exp(-2 pi**2 hkl U*_j hkl) is the anisotropic Debye-Waller
    factor when ``ustar`` is (n_entries, 3, 3), and 1 when it is empty (0, 3, 3). The phase factorises into per-axis tables
    exp(2 pi i h x) exp(2 pi i k y) exp(2 pi i l z); points arrive with l innermost, so the (h, k) part
    is recomputed only when h or k changes and each point costs one complex product per entry.
    """
    n_points = hkl.shape[0]
    n_entries = frac_coords.shape[0]
    n_elements = element_start.shape[0] - 1
    has_ustar = ustar.shape[0] > 0
    two_pi_sq = 2.0 * math.pi * math.pi
    out = np.empty(n_points, dtype=np.float64)
    if n_points == 0:
        return out
    h_lo, h_hi = hkl[:, 0].min(), hkl[:, 0].max()
    k_lo, k_hi = hkl[:, 1].min(), hkl[:, 1].max()
    l_lo, l_hi = hkl[:, 2].min(), hkl[:, 2].max()
    th_re, th_im = _axis_phase_table(frac_coords[:, 0].copy(), h_lo, h_hi)
    tk_re, tk_im = _axis_phase_table(frac_coords[:, 1].copy(), k_lo, k_hi)
    tl_re, tl_im = _axis_phase_table(frac_coords[:, 2].copy(), l_lo, l_hi)
    w_re = np.empty(n_entries, dtype=np.float64)
    w_im = np.empty(n_entries, dtype=np.float64)
    previous_h = -1
    previous_k = -1
    for m in range(n_points):
        ih = hkl[m, 0] - h_lo
        ik = hkl[m, 1] - k_lo
        il = hkl[m, 2] - l_lo
        if has_ustar or ih != previous_h or ik != previous_k:
            previous_h = ih
            previous_k = ik
            for j in range(n_entries):
                weight = occupancy[j]
                if has_ustar:
                    quad = 0.0
                    for a in range(3):
                        for b in range(3):
                            quad += hkl[m, a] * ustar[j, a, b] * hkl[m, b]
                    weight *= math.exp(-two_pi_sq * quad)
                hk_re = th_re[ih, j] * tk_re[ik, j] - th_im[ih, j] * tk_im[ik, j]
                hk_im = th_re[ih, j] * tk_im[ik, j] + th_im[ih, j] * tk_re[ik, j]
                w_re[j] = weight * hk_re
                w_im[j] = weight * hk_im
        f_re = 0.0
        f_im = 0.0
        row_re = tl_re[il]
        row_im = tl_im[il]
        for e in range(n_elements):
            lo = element_start[e]
            hi = element_start[e + 1]
            s_re, s_im = _phase_sum(w_re[lo:hi], w_im[lo:hi], row_re[lo:hi], row_im[lo:hi])
            f_re += form_factor[e, m] * s_re
            f_im += form_factor[e, m] * s_im
        out[m] = f_re * f_re + f_im * f_im
    return out


@njit(cache=True)
def merge_bins(g, two_theta_deg, bin_key, intensity):
    """Sum intensities sharing a bin key; each bin keeps 2-theta and d = 1/g of its smallest-g member.

    Matches XRDCalculator's dict merge: reflections are visited by ascending g (equal g means identical
    2-theta and d), the first visit of a key fixes its position, bins come out sorted by key.
    Returns (two_theta_deg, d_angstrom, summed intensity) per bin, then the visiting order (M,) int64 and
    bin_start (n_bins + 1,) int64: the reflections of bin b are order[bin_start[b]:bin_start[b + 1]].
    """
    by_g = np.argsort(g, kind="mergesort")
    by_key = by_g[np.argsort(bin_key[by_g], kind="mergesort")]
    n = by_key.shape[0]
    out_tt = np.empty(n, dtype=np.float64)
    out_d = np.empty(n, dtype=np.float64)
    out_i = np.empty(n, dtype=np.float64)
    bin_start = np.empty(n + 1, dtype=np.int64)
    n_bins = -1
    previous_key = 0
    for pos in range(n):
        m = by_key[pos]
        if n_bins < 0 or bin_key[m] != previous_key:
            n_bins += 1
            previous_key = bin_key[m]
            bin_start[n_bins] = pos
            out_tt[n_bins] = two_theta_deg[m]
            out_d[n_bins] = 1.0 / g[m]
            out_i[n_bins] = intensity[m]
        else:
            out_i[n_bins] += intensity[m]
    n_bins += 1
    bin_start[n_bins] = n
    return (
        out_tt[:n_bins].copy(),
        out_d[:n_bins].copy(),
        out_i[:n_bins].copy(),
        by_key.astype(np.int64),
        bin_start[: n_bins + 1].copy(),
    )


@njit(cache=True)
def busing_levy_frame(recip):
    """Rows a*, b*, c* (1/Å) in the Busing-Levy frame: the lower Cholesky factor of the metric recip recip^T.

    ``recip`` rows are a*, b*, c* in any Cartesian frame; the result depends on the metric only, so on the
    cell parameters and not on how the cell was oriented.
    """
    metric = np.empty((3, 3), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            metric[i, j] = recip[i, 0] * recip[j, 0] + recip[i, 1] * recip[j, 1] + recip[i, 2] * recip[j, 2]
    frame = np.zeros((3, 3), dtype=np.float64)
    for i in range(3):
        for j in range(i + 1):
            s = metric[i, j]
            for k in range(j):
                s -= frame[i, k] * frame[j, k]
            frame[i, j] = math.sqrt(s) if i == j else s / frame[j, j]
    return frame


@njit(cache=True)
def peak_reflections(order, bin_start, kept_bins, hkl, intensity, bin_intensity, frame):
    """The reflections of the kept bins, laid end to end in bin order, members in merge_bins' visiting order.

    Returns reflection_offsets (n_kept + 1,) int64, the unit vector of each reflection's g = hkl @ frame as
    float32 (R, 3), and its share intensity / bin_intensity of its bin as float32 (R,).
    """
    n_kept = kept_bins.shape[0]
    offsets = np.empty(n_kept + 1, dtype=np.int64)
    offsets[0] = 0
    for p in range(n_kept):
        b = kept_bins[p]
        offsets[p + 1] = offsets[p] + bin_start[b + 1] - bin_start[b]
    direction = np.empty((offsets[n_kept], 3), dtype=np.float32)
    weight = np.empty(offsets[n_kept], dtype=np.float32)
    r = 0
    for p in range(n_kept):
        b = kept_bins[p]
        for pos in range(bin_start[b], bin_start[b + 1]):
            m = order[pos]
            h = float(hkl[m, 0])
            k = float(hkl[m, 1])
            ell = float(hkl[m, 2])
            x = h * frame[0, 0] + k * frame[1, 0] + ell * frame[2, 0]
            y = h * frame[0, 1] + k * frame[1, 1] + ell * frame[2, 1]
            z = h * frame[0, 2] + k * frame[1, 2] + ell * frame[2, 2]
            length = math.sqrt(x * x + y * y + z * z)
            direction[r, 0] = x / length
            direction[r, 1] = y / length
            direction[r, 2] = z / length
            weight[r] = intensity[m] / bin_intensity[b]
            r += 1
    return offsets, direction, weight
