"""Training: the trainer shared by UrbanCLIP and UrbanLN, checkpoints and distributed helpers."""

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .schedule import lr_at
from .trainer import TrainConfig, Trainer

__all__ = ["CheckpointError", "TrainConfig", "Trainer", "latest_checkpoint", "load_checkpoint", "lr_at", "save_checkpoint"]
