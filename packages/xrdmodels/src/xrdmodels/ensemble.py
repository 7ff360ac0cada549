"""Ensembles of presence models: several independently trained checkpoints read as one model.

An ensemble's probability that a space group is present is the mean of its members' probabilities (a deep
ensemble; Lakshminarayanan et al., NeurIPS 2017). Members trained from different seeds err differently on
patterns unlike their training data: on the RRUFF minerals two such members averaged ranked better than either
alone, though on a 2-core machine not better than one model given both cores for the same time
(docs/benchmarks.md, "Ensembles").

On disk an ensemble is a small JSON manifest naming its members (docs/formats.md, "Ensemble manifests"):

    {"format": "xrdmodels.ensemble", "format_version": 1, "members": ["seed0/last.pt", "seed1/last.pt"]}

Relative member paths are read from the manifest's folder. Every command that takes a checkpoint takes a
manifest in its place (:func:`xrdmodels.evaluate.load_model`); ``xrdmodels ensemble`` writes one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .models.model import ModelOutput, SpaceGroupModel

ENSEMBLE_FORMAT = "xrdmodels.ensemble"
ENSEMBLE_FORMAT_VERSION = 1
#: A manifest naming more members than this is refused: it is not a file this package writes.
MAX_MEMBERS = 64
#: Model-config fields every member must share: the grid the pattern is put on. The wavelength it is mapped to and
#: the training recipe the input warnings compare with (`data.wavelength_angstrom`, `data.recipe`) must agree too.
_SHARED_MODEL_FIELDS = ("two_theta_min_deg", "two_theta_max_deg", "n_bins")


class ManifestError(ValueError):
    """An ensemble manifest that cannot be used; the message names the file and what to fix."""


class PresenceEnsemble(nn.Module):
    """Presence models averaged: ``set_probs`` is the mean of the members' presence probabilities, and
    ``presence_logits`` its logit, so that everything reading a presence model reads an ensemble alike."""

    def __init__(self, members: list[SpaceGroupModel]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: Tensor, mask: Tensor) -> ModelOutput:
        probs = torch.stack([member(x, mask).set_probs.float() for member in self.members]).mean(dim=0)
        return ModelOutput(set_probs=probs, presence_logits=torch.logit(probs, eps=1e-7))


def is_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an ensemble manifest (by its ``.json`` suffix) rather than a checkpoint."""
    return Path(path).suffix.lower() == ".json"


def read_manifest(path: str | os.PathLike) -> list[Path]:
    """The member checkpoints a manifest names, resolved against its folder.

    Raises:
        FileNotFoundError: no file at ``path``.
        ManifestError: not JSON, another format or version, no members, a member that is not a string or is
            itself a manifest, a ``best_threshold`` outside [0, 1]; the message names the file.
    """
    return _read(Path(path))[0]


def manifest_threshold(path: str | os.PathLike) -> float | None:
    """The ensemble's own operating threshold, chosen on a validation store by ``xrdmodels ensemble
    --val-store`` (best micro-F1 of the averaged probabilities, A.7); None when the manifest records none."""
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[list[Path], float | None]:
    if not path.is_file():
        raise FileNotFoundError(f"no ensemble manifest at {path}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            f"{path} is not an ensemble manifest: {exc}; a checkpoint file ends in .pt, a manifest is the JSON "
            "`xrdmodels ensemble` writes"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != ENSEMBLE_FORMAT:
        raise ManifestError(f'{path} is not an ensemble manifest: its "format" is not {ENSEMBLE_FORMAT!r}')
    if manifest.get("format_version") != ENSEMBLE_FORMAT_VERSION:
        raise ManifestError(
            f"{path}: ensemble manifest format_version {manifest.get('format_version')!r}; this xrdmodels reads "
            f"version {ENSEMBLE_FORMAT_VERSION} (a newer version needs a newer xrdmodels)"
        )
    members = manifest.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
        raise ManifestError(f'{path}: "members" must be a non-empty list of checkpoint paths')
    if len(members) > MAX_MEMBERS:
        raise ManifestError(f"{path}: {len(members)} members; at most {MAX_MEMBERS} are read")
    resolved = [path.parent / m for m in members]
    nested = [str(m) for m in resolved if is_manifest(m)]
    if nested:
        raise ManifestError(f"{path}: members must be checkpoints, not manifests: {', '.join(nested)}")
    threshold = manifest.get("best_threshold")
    if threshold is not None and not (
        isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0
    ):
        raise ManifestError(f'{path}: "best_threshold" must be a probability in [0, 1], got {threshold!r}')
    return resolved, None if threshold is None else float(threshold)


def check_manifest_names(path: Path, members: list[str | os.PathLike]) -> None:
    """Raise ManifestError when ``path`` does not end in .json or a member is itself a manifest: what can be
    refused before any member is loaded."""
    if not is_manifest(path):
        raise ManifestError(f"{path}: an ensemble manifest's name must end in .json")
    nested = [str(m) for m in members if is_manifest(m)]
    if nested:
        raise ManifestError(f"{path}: members must be checkpoints, not manifests: {', '.join(nested)}")


def write_manifest(
    path: str | os.PathLike,
    members: list[str | os.PathLike],
    load_member: Callable[[Path], tuple[nn.Module, dict[str, Any]]] | None = None,
    best_threshold: float | None = None,
) -> Path:
    """Write a manifest naming ``members``, each stored relative to the manifest's folder when it lies below
    it (so that the folder can be moved as a whole), else as an absolute path, and the ensemble's own
    ``best_threshold`` when one was chosen on a validation store.

    With ``load_member`` (e.g. :func:`xrdmodels.evaluate.load_model`) every member is loaded and the members are
    checked against each other (:func:`ensemble_state`) before anything is written.

    Raises:
        ManifestError: ``path`` does not end in .json, a member is a manifest, or the members disagree.
        FileNotFoundError, CheckpointError: from ``load_member``.
    """
    path = Path(path)
    check_manifest_names(path, members)
    if load_member is not None:
        ensemble_state(path, [Path(m) for m in members], [load_member(Path(m))[1] for m in members])
    folder = path.parent.resolve()
    names = []
    for member in members:
        full = Path(member).resolve()
        names.append(str(full.relative_to(folder)) if full.is_relative_to(folder) else str(full))
    manifest: dict[str, Any] = {
        "format": ENSEMBLE_FORMAT,
        "format_version": ENSEMBLE_FORMAT_VERSION,
        "members": names,
    }
    if best_threshold is not None:
        manifest["best_threshold"] = float(best_threshold)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def ensemble_state(
    manifest: str | os.PathLike,
    members: list[Path],
    states: list[dict[str, Any]],
    own_threshold: float | None = None,
) -> dict:
    """The checkpoint contents an ensemble stands on: the first member's, after checking that every member is
    a presence model on the same grid, wavelength and training recipe. The operating threshold is the
    manifest's own (``own_threshold``: its ``best_threshold``, chosen on a validation store) where it records
    one, else the mean of
    the members' validation thresholds; ``step`` is None and ``members`` lists each member's path and step.

    Raises:
        ManifestError: a phase-cluster member, or members that disagree; the message names both files.
    """
    first = states[0]
    for member, state in zip(members, states, strict=True):
        if state["model_config"].get("head") != "presence":
            raise ManifestError(
                f"{manifest}: {member} is a {state['model_config'].get('head')} model; an ensemble averages "
                "presence probabilities, so every member must have the presence head"
            )
        differing = [
            k for k in _SHARED_MODEL_FIELDS if state["model_config"].get(k) != first["model_config"][k]
        ]
        data, first_data = state.get("data", {}), first.get("data", {})
        differing += [k for k in ("wavelength_angstrom", "recipe") if data.get(k) != first_data.get(k)]
        if differing:
            raise ManifestError(
                f"{manifest}: {member} differs from {members[0]} in {', '.join(differing)}; members must read "
                "patterns alike (train them on stores of one grid, wavelength and recipe)"
            )
    thresholds = [s.get("val_metrics", {}).get("best_threshold") for s in states]
    merged = {k: v for k, v in first.items() if k != "model"}
    merged["step"] = None
    merged["members"] = [
        {"checkpoint": str(m), "step": s.get("step")} for m, s in zip(members, states, strict=True)
    ]
    if own_threshold is not None:
        merged["val_metrics"] = {"best_threshold": own_threshold}
    elif all(t is not None for t in thresholds):
        merged["val_metrics"] = {"best_threshold": float(sum(thresholds) / len(thresholds))}
    else:
        merged.pop("val_metrics", None)
    # The mean of the members' label priors, for the ranking's hedge (predict.label_prior); none unless every
    # member records one.
    priors = [s.get("data", {}).get("label_prior") for s in states]
    data = {k: v for k, v in first.get("data", {}).items() if k != "label_prior"}
    if all(p is not None for p in priors):
        data["label_prior"] = [sum(values) / len(values) for values in zip(*priors, strict=True)]
    merged["data"] = data
    return merged
