"""xrdsynth: crystal structures -> exact single-phase XRD bank -> augmented multi-phase mixtures."""

__version__ = "0.1.0"
