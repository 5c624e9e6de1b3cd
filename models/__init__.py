"""Backbones (VGG17, ResNet18/34, ViT-Tiny/Small) and one registry.

``build_model(arch, num_classes, nc_control=...)`` returns a :class:`nc_control.ControlledNet`:
encoder -> [projector -> L2 norm] -> linear classifier.
"""
from models.registry import MODELS, build_model, list_models, register_model
from models import resnet, vgg, vit  # noqa: F401  (importing registers the architectures)

__all__ = ["MODELS", "build_model", "list_models", "register_model"]
