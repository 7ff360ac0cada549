"""Looking at a mixture store as a person: summary statistics and a plot of one sample."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import zarr

from .config import MAX_PHASES
from .store import MIXTURE_FORMAT, MIXTURE_FORMAT_VERSION, PER_PHASE_PARAMETERS, completed_shards


def remote_options(url: str, storage_options: dict | None) -> dict | None:
    """``storage_options`` where ``url`` is a remote fsspec URL, None for a local path: one set of options serves
    a command's store and bank wherever each of them lives."""
    from .generate import local_path

    return (storage_options or None) if local_path(url) is None else None


def open_store(url: str, storage_options: dict | None = None) -> zarr.Group:
    """The root group of the complete-enough mixture store at ``url`` (a path or fsspec URL; ``storage_options``:
    fsspec options used only where it is remote).

    Raises:
        ValueError: nothing readable there, not a mixture store, another format version, or an interrupted
            creation.
    """
    from .generate import check_remote_reachable, local_path

    options = remote_options(url, storage_options)
    if local_path(url) is None:
        check_remote_reachable(url, options)  # seconds, not minutes of retries, for a dead endpoint
    try:
        root = zarr.open_group(url, mode="r", storage_options=options)
    except Exception as exc:  # noqa: BLE001
        folder = local_path(url)
        stores = (
            sorted(p.name for p in Path(folder).glob("*.zarr")) if folder and Path(folder).is_dir() else []
        )
        hint = (
            f"; it is a folder of stores ({', '.join(stores)}): name one, e.g. {url}/{stores[0]}"
            if stores
            else ""
        )
        raise ValueError(f"no mixture store at {url} ({exc}){hint}") from exc
    if root.attrs.get("format") != MIXTURE_FORMAT:
        hint = (
            "; it is a bank: `xrdsynth bank info` describes it"
            if root.attrs.get("format") == "xrdsynth.bank"
            else ""
        )
        raise ValueError(
            f"{url} is not an xrdsynth mixture store (format {root.attrs.get('format')!r}){hint}"
        )
    if root.attrs.get("format_version") != MIXTURE_FORMAT_VERSION:
        raise ValueError(
            f"{url} has mixture format version {root.attrs.get('format_version')}; "
            f"this xrdsynth reads {MIXTURE_FORMAT_VERSION}"
        )
    if "config_fingerprint" not in root.attrs:
        # The attributes are written last when a store is created (store.create_store).
        raise ValueError(
            f"{url} is an unfinished mixture store: its creation was interrupted before any sample was written; "
            "rerun `xrdsynth mixtures generate` with --resume (or --overwrite) to create it again"
        )
    return root


def _written_rows(root: zarr.Group) -> np.ndarray:
    """bool (n_samples,): rows whose shard is flagged complete."""
    a = root.attrs
    return np.repeat(completed_shards(root), a["shard_size"])[: a["n_samples"]]


def describe_store(url: str, storage_options: dict | None = None) -> str:
    """Counts, K* and space-group histograms, and the min/mean/max of every sampled parameter."""
    root = open_store(url, storage_options)
    try:
        return _describe(url, root)
    except (KeyError, FileNotFoundError) as exc:
        raise ValueError(f"{url} is damaged: {exc} is missing; regenerate it with --overwrite") from None


def _describe(url: str, root: zarr.Group) -> str:
    a = root.attrs
    done = completed_shards(root)
    out = io.StringIO()
    out.write(
        f"store {url}\n  format {a['format']} v{a['format_version']}, split {a['split']}, seed {a['seed']}, "
        f"complete {a.get('complete')}\n  samples {a['n_samples']}, shards {int(done.sum())}/{len(done)} written, "
        f"bank {a['bank_fingerprint']}\n"
    )
    if not done.any():
        out.write("  no shard written yet: rerun `xrdsynth mixtures generate` with --resume to fill it\n")
        return out.getvalue()
    written = _written_rows(root)
    n_phases = np.asarray(root["n_phases"][:])[written]
    ks, counts = np.unique(n_phases, return_counts=True)
    out.write(
        "  K* histogram: "
        + ", ".join(f"{k}: {c} ({c / max(len(n_phases), 1):.1%})" for k, c in zip(ks, counts, strict=True))
        + "\n"
    )
    sg = np.asarray(root["phase_spacegroup"][:])[written]
    hist = np.bincount(sg[sg > 0].ravel(), minlength=231)[1:]
    out.write(
        f"  space groups seen: {int((hist > 0).sum())} of 230; most frequent: "
        + ", ".join(f"{i + 1}:{hist[i]}" for i in np.argsort(-hist)[:10] if hist[i])
        + "\n"
    )
    w = np.asarray(root["phase_weight"][:])[written]
    if len(w):
        out.write(f"  phase weight: min {w[w > 0].min():.3f}, max {w.max():.3f}\n")
    out.write("  parameters (min / mean / max over written samples; per-phase ones over present phases):\n")
    present = np.arange(MAX_PHASES)[None, :] < n_phases[:, None]
    for name in sorted(root["params"].array_keys()):
        v = np.asarray(root["params"][name][:])[written]
        if name in PER_PHASE_PARAMETERS:
            v = v[present]
        if v.size:
            out.write(f"    {name:32s} {v.min():12.5g} {v.mean():12.5g} {v.max():12.5g}\n")
    return out.getvalue()


def plot_sample(
    url: str, index: int, png: str, bank_url: str | None = None, storage_options: dict | None = None
) -> tuple[str, str | None]:
    """PNG of one sample: its pattern, the measurement window, and each phase's sticks in its own colour.
    ``storage_options`` apply to each of the store and the bank that is a remote URL. Returns the PNG's path
    and, where the plot has no sticks, why (the bank could not be opened, or is not the one the store was
    written from): the sticks are optional, so the plot is drawn without them. A ``png`` without a suffix gets
    ``.png`` (as matplotlib writes it); a ``png`` whose folder does not exist is refused before anything is read."""
    if not Path(png).suffix:
        png = f"{png}.png"
    if not Path(png).resolve().parent.is_dir():
        raise ValueError(
            f"--out {png}: the folder {Path(png).parent} does not exist or is not a folder; create it"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = open_store(url, storage_options)
    a = root.attrs
    n = a["n_samples"]
    if not 0 <= index < n:
        raise ValueError(f"--index {index} is outside the store's 0..{n - 1}")
    if not _written_rows(root)[index]:
        raise ValueError(
            f"sample {index} of {url} is not written yet (its shard is incomplete); finish the store with "
            "`xrdsynth mixtures generate ... --resume`"
        )
    grid = a["grid"]
    width = (grid["two_theta_max_deg"] - grid["two_theta_min_deg"]) / grid["n_bins"]
    centers = grid["two_theta_min_deg"] + width * (np.arange(grid["n_bins"]) + 0.5)
    pattern = np.asarray(root["pattern"][index], dtype=np.float32)
    lo, hi = (int(x) for x in root["window_bins"][index])
    k = int(root["n_phases"][index])
    materials = np.asarray(root["phase_material"][index])[:k]
    sgs = np.asarray(root["phase_spacegroup"][index])[:k]
    weights = np.asarray(root["phase_weight"][index])[:k]
    ids = np.asarray(root["materials"]["id"][:])

    from .bank import Bank
    from .generate import recorded_bank

    bank, no_sticks = None, None
    fix = "check the --bank path" if bank_url else "give it with --bank"
    bank_url = bank_url or recorded_bank(url, a)
    try:
        bank = Bank.open(bank_url, remote_options(bank_url, storage_options))
    except Exception as exc:  # noqa: BLE001 - sticks are optional: any failure is reported, the plot drawn
        # Bank.open's own errors name the bank already; others (a library's) may not.
        named = "" if bank_url in str(exc) else f" {bank_url}"
        no_sticks = f"the bank{named} could not be opened ({type(exc).__name__}: {exc}); {fix}"
    else:
        if bank.fingerprint != a["bank_fingerprint"]:
            no_sticks = (
                f"the bank {bank_url} (fingerprint {bank.fingerprint}) is not the one {url} was written from "
                f"({a['bank_fingerprint']}); give that one with --bank"
            )
            bank = None

    fig, (ax, ax_sticks) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    ax.axvspan(
        centers[0] - width / 2,
        centers[lo] - width / 2 if lo < len(centers) else centers[-1],
        color="0.9",
        lw=0,
    )
    ax.axvspan(
        centers[hi - 1] + width / 2, centers[-1] + width / 2, color="0.9", lw=0, label="outside window"
    )
    ax.plot(centers, pattern, color="k", lw=0.8, label="pattern")
    ax.set_ylabel("intensity (normalised)")
    ax.set_title(f"{url} — sample {index}, K* = {k}")
    ax.legend(loc="upper right", fontsize=8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (m, sg, wt) in enumerate(zip(materials, sgs, weights, strict=True)):
        label = f"{ids[m]}  SG {sg}  w={wt:.2f}"
        if bank is not None:
            two_theta, _, inten = bank.peaks(int(m))
            ax_sticks.vlines(
                two_theta, 0, wt * inten / 100.0, color=colors[j % len(colors)], lw=1, label=label
            )
        else:
            ax_sticks.plot([], [], color=colors[j % len(colors)], label=label + " (no bank: no sticks)")
    ax_sticks.set_xlabel("2θ (degrees)")
    ax_sticks.set_ylabel("weight × I/I_max")
    ax_sticks.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png, no_sticks
