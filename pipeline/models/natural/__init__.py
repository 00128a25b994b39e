"""The classic natural-image segmentation architectures (FCN, DeconvNet, SegNet, PSPNet, DeepLab v1-v3+, SETR, Swin).

Each maps (B, 3, H, W) to class logits (B, C, H, W). Backbones are written here in PyTorch (VGG16,
a dilated ResNet) or come from MONAI (ViT, SwinTransformer); torchvision and timm are never used.
Widths are configurable so the CPU tests stay small; the configs carry the papers' settings.
"""
