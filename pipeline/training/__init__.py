"""The one training engine for 2D and 3D models: data sampling, augmentation, losses, loop, checkpoints, DDP."""
