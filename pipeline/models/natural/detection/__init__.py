"""Mask R-CNN (He et al., 2017) in plain PyTorch and MONAI's detection utilities (no torchvision)."""
