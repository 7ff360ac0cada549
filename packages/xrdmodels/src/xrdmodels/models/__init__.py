"""Network modules: CNN front-end (A.2), encoders (A.3), heads (A.4) and the composed `SpaceGroupModel`."""

from xrdmodels.models.encoders import TokenCNNEncoder, TransformerEncoder
from xrdmodels.models.frontend import CNNFrontEnd
from xrdmodels.models.heads import (
    PhaseClusterHead,
    PresenceHead,
    slot_gates,
    slot_noisy_or_probs,
    slot_union_scores,
)
from xrdmodels.models.model import ModelOutput, SpaceGroupModel

__all__ = [
    "CNNFrontEnd",
    "ModelOutput",
    "PhaseClusterHead",
    "PresenceHead",
    "SpaceGroupModel",
    "TokenCNNEncoder",
    "TransformerEncoder",
    "slot_gates",
    "slot_noisy_or_probs",
    "slot_union_scores",
]
