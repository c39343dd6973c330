"""Extreme Fine-Tuning: brief backprop fine-tuning of a text encoder + a closed-form I-ELM head.

Public API: :class:`EFTClassifier` and :class:`EFTConfig` (the method end to end),
:class:`IELMClassifier` and :func:`sweep` (the closed-form head on any features),
:func:`export_onnx` (a fitted model as one ONNX graph), :class:`Callback` and
:class:`EpochLog` (watch or stop the BP stage during ``fit``).
"""

from eft.callbacks import Callback, EpochLog
from eft.classifier import EFTClassifier
from eft.config import EFTConfig
from eft.errors import InputError
from eft.export import export_onnx
from eft.ielm import IELMClassifier, SweepResult, sweep

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "EFTClassifier",
    "EFTConfig",
    "EpochLog",
    "IELMClassifier",
    "InputError",
    "SweepResult",
    "__version__",
    "export_onnx",
    "sweep",
]
