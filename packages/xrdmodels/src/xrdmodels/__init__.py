"""Space-group prediction from multi-phase powder XRD: models, losses and training utilities.

Reads the documented Zarr store format only; it never imports the `xrdsynth` generator.
"""

from xrdmodels.config import N_SPACE_GROUPS, NONE_CLASS, ModelConfig, PresenceLoss, preset
from xrdmodels.loss import (
    assignment_loss,
    asymmetric_presence_loss,
    labels_to_multi_hot,
    model_loss,
    presence_bce_loss,
    trace_mask,
)
from xrdmodels.models import ModelOutput, SpaceGroupModel

__all__ = [
    "N_SPACE_GROUPS",
    "NONE_CLASS",
    "ModelConfig",
    "ModelOutput",
    "PresenceLoss",
    "SpaceGroupModel",
    "assignment_loss",
    "asymmetric_presence_loss",
    "labels_to_multi_hot",
    "model_loss",
    "presence_bce_loss",
    "preset",
    "trace_mask",
]
