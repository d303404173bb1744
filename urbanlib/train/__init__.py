"""Training: the trainer shared by UrbanCLIP and UrbanLN, checkpoints and distributed helpers."""
