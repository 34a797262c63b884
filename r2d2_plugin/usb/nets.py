"""``digits_cnn``: a small CNN for 16x16 and 28x28 images, and ``resnet18``, built through USB's
net-builder interface."""
from __future__ import annotations

from typing import Any, Dict, Optional, TypeVar

import torch
from torch import nn

# BatchNorm momentum 0.01 pairs with ema_m 0.99 in the digits configs, as USB's WRN pairs
# momentum 0.001 with ema_m 0.999: USB evaluates EMA weights with live BatchNorm statistics.
BN_MOMENTUM = 0.01
Net = TypeVar("Net", bound=nn.Module)


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))


class DigitsCNN(nn.Module):
    """Three conv blocks and a linear classifier; ``forward`` returns USB's
    ``{'logits', 'feat'}`` dict and honours ``only_fc`` / ``only_feat``.

    Convolutions run channels-last (weights and inputs): on one CPU thread the forward pass is
    about twice as fast as in the default layout at 28x28 (docs/datasets.md); values agree up to
    float rounding."""

    def __init__(self, num_classes: int, width: int = 32, in_channels: int = 3):
        super().__init__()
        self.extract = nn.Sequential(conv_bn(in_channels, width), nn.MaxPool2d(2),
                                     conv_bn(width, 2 * width), nn.MaxPool2d(2),
                                     conv_bn(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten())
        self.num_features = 4 * width
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, only_fc: bool = False, only_feat: bool = False,
                **kwargs: Any) -> Any:
        if only_fc:
            return self.classifier(x)
        feat = self.extract(x.contiguous(memory_format=torch.channels_last))
        if only_feat:
            return feat
        return {"logits": self.classifier(feat), "feat": feat}


def with_pretrained(model: Net, pretrained: bool, pretrained_path: Optional[str]) -> Net:
    """``model``, with the weights at ``pretrained_path`` (a state dict, or a checkpoint's
    ``model``) when ``pretrained``."""
    if pretrained:
        state: Dict[str, torch.Tensor] = torch.load(pretrained_path, map_location="cpu")
        model.load_state_dict(state.get("model", state))
    return model


def digits_cnn(num_classes: int = 10, pretrained: bool = False,
               pretrained_path: Optional[str] = None, **kwargs: Any) -> DigitsCNN:
    """USB net builder: ``get_net_builder('digits_cnn', False)(num_classes=...)``."""
    return with_pretrained(DigitsCNN(num_classes, **kwargs), pretrained, pretrained_path)


def resnet18(num_classes: int = 1000, pretrained: bool = False,
             pretrained_path: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """USB net builder for ResNet-18, the R2-D2 paper's ImageNet net: USB's own ImageNet ResNet
    (``semilearn.nets.resnet.resnet.ResNet50``, which takes the block type and depths) with basic
    blocks and layers [2, 2, 2, 2]; it returns USB's ``{'logits', 'feat'}`` dict."""
    from semilearn.nets.resnet.resnet import BasicBlock, ResNet50

    model = ResNet50(block=BasicBlock, layers=[2, 2, 2, 2], num_classes=num_classes, **kwargs)
    return with_pretrained(model, pretrained, pretrained_path)
