"""Extreme Fine-Tuning: brief backprop fine-tuning of a text encoder + a closed-form I-ELM head."""

from eft.ielm import IELMClassifier, SweepResult, sweep

__version__ = "0.1.0"

__all__ = ["IELMClassifier", "SweepResult", "__version__", "sweep"]
