"""Network architectures of the demo world's classifiers and identity model.

The committed weights are state dicts of these modules; changing a layer here makes them stop
loading (strictly), which the manifest tests catch.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.demo.attributes import CLASS_NAMES

CLASSIFIER_RESOLUTION = 64
# Classifier inputs: RGB in [0, 1], normalised as (x - 0.5) / 0.5. Stored in the MLflow metadata.
CLASSIFIER_PREPROCESSING = {
    "resolution": CLASSIFIER_RESOLUTION,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}

IDENTITY_INPUT_SIZE = 112  # InsightFace's recognition models take 112x112 faces
IDENTITY_EMBEDDING_SIZE = 512


def _conv_block(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class HairstyleNet(nn.Module):
    """A small CNN from 64x64 normalised RGB `[N, 3, 64, 64]` to hairstyle logits `[N, 6]`.

    The last feature map (4x4) is flattened rather than pooled, so the classifier keeps where
    hair is (above the brows, below the chin), which tells fringes and lengths apart.
    """

    def __init__(self, num_classes: int = len(CLASS_NAMES), width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(3, width, 2),  # 32 px
            *_conv_block(width, width, 1),
            *_conv_block(width, 2 * width, 2),  # 16 px
            *_conv_block(2 * width, 4 * width, 2),  # 8 px
            *_conv_block(4 * width, 4 * width, 2),  # 4 px
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * width * 16, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class IdentityNet(nn.Module):
    """An ArcFace-style embedding network: `[N, 3, 112, 112]` in [-1, 1] to `[N, 512]`.

    The first layer averages 2x2 pixels, because the demo faces are about 40 px wide before the
    crop is resized to 112 px and carry no detail at full input resolution. The head follows
    ArcFace's BN-dropout-FC-BN embedding layer.
    """

    def __init__(self, width: int = 16, embedding_size: int = IDENTITY_EMBEDDING_SIZE) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),  # 56 px
            *_conv_block(3, width, 1),
            *_conv_block(width, 2 * width, 2),  # 28 px
            *_conv_block(2 * width, 2 * width, 1),
            *_conv_block(2 * width, 4 * width, 2),  # 14 px
            *_conv_block(4 * width, 4 * width, 1),
            *_conv_block(4 * width, 4 * width, 2),  # 7 px
        )
        self.head = nn.Sequential(
            nn.BatchNorm2d(4 * width),
            nn.Dropout(0.1),
            nn.Flatten(),
            nn.Linear(4 * width * 49, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
