"""Export the test zoo: tiny random-weight classifiers with the patterns of current architectures.

Run with a Python that has torch (torch is used only here, never by the package or its tests):

    python tests/zoo/make_zoo.py [OUT_DIR [NAME ...]]    # default: all, into the folder of this script

Every model takes a 3 x 32 x 32 image (NCHW unless named nhwc), outputs 10 class scores
and weighs well under 1 MB. The weights are random (seeded): the zoo tests graph patterns,
not accuracy. What each model exercises:

- vit: patch embedding Conv, class token (Concat), position embedding, pre-norm attention
  blocks (LayerNormalization, batched MatMul, Softmax, erf GELU), class-token select (Gather).
- vit_dynamo: the same network exported by ``torch.onnx.export(dynamo=True)`` (opset 18).
- vit_registers: a class token and two register tokens, a head averaging the patch tokens
  (Slice + ReduceMean over the token axis + Gemm).
- swin: Swin-style shifted-window attention (roll = Slice + Concat, window partition by
  Reshape/Transpose, relative position bias by Gather), decomposed LayerNorm (opset 14),
  NHWC tokens inside, Transpose + GlobalAveragePool head.
- convnext: ConvNeXt blocks (7x7 depthwise Conv, channels-last LayerNormalization, GELU,
  layer scale), ReduceMean head followed by LayerNorm and Linear.
- shufflenet: channel shuffle (Reshape / Transpose / Reshape on run-time sizes), Split,
  Concat, ReduceMean over the spatial axes + Gemm head.
- se_silu: EfficientNet-style MBConv with SiLU and a squeeze-excitation block, GAP + Gemm.
- resnet_dynamo: a residual net exported with dynamo=True (ReduceMean head).
- nhwc: an NHWC input with a Transpose at the front (NCHW inside), HardSwish, GAP + Gemm.
- softmax_head: a MobileNetV3-like net whose output is a Softmax (HardSigmoid SE, Mish).
- dynamic_hw: dynamic batch, height and width; reflect Pad, Resize (nearest and bilinear),
  Softplus, Clip with run-time bounds, GlobalAveragePool + MatMul + Add head.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SIZE = 32
CLASSES = 10


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, dim: int = 32, patch: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        grid = (SIZE // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, grid + 1, dim) * 0.5)
        self.blocks = nn.Sequential(*[Block(dim, 4) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class RegisterViT(ViT):
    """A ViT with a class token and two register tokens whose head averages the patch tokens."""

    def __init__(self) -> None:
        super().__init__(dim=24)
        self.registers = nn.Parameter(torch.randn(1, 2, 24) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos[:, 1:]
        b = x.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), self.registers.expand(b, -1, -1), x], dim=1)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 3:].mean(dim=1))


class WindowBlock(nn.Module):
    """Swin block on (B, H, W, C) tokens: (shifted) window attention with a relative position bias."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = y.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        bias = self.table[self.index].view(ws * ws, ws * ws, self.heads).permute(2, 0, 1).unsqueeze(0)
        y = self.attn(y, bias)
        y = y.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    def __init__(self, dim: int = 24) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(WindowBlock(dim, 3, 4, 0), WindowBlock(dim, 3, 4, 2))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).permute(0, 2, 3, 1)
        x = self.norm(self.blocks(x)).permute(0, 3, 1, 2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pw2(F.gelu(self.pw1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.down = nn.Conv2d(dim, 2 * dim, 2, stride=2)
        self.last = ConvNeXtBlock(2 * dim)
        self.norm, self.head = nn.LayerNorm(2 * dim, eps=1e-6), nn.Linear(2 * dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.down(self.blocks(self.stem(x))))
        return self.head(self.norm(x.mean([-2, -1])))


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.branch = nn.Sequential(nn.Conv2d(half, half, 1), nn.BatchNorm2d(half), nn.ReLU(),
                                    nn.Conv2d(half, half, 3, padding=1, groups=half), nn.BatchNorm2d(half),
                                    nn.Conv2d(half, half, 1), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return shuffle(torch.cat([a, self.branch(b)], dim=1), 2)


class ShuffleNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.units = nn.Sequential(ShuffleUnit(dim), ShuffleUnit(dim))
        self.conv = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim), nn.ReLU())
        self.fc = nn.Linear(2 * dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.units(self.stem(x))).mean([2, 3]))


class SqueezeExcite(nn.Module):
    def __init__(self, dim: int, inner: int, act: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.reduce, self.expand, self.act, self.gate = nn.Conv2d(dim, inner, 1), nn.Conv2d(inner, dim, 1), act, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(F.adaptive_avg_pool2d(x, 1)))))


class SESiLU(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.SiLU())
        self.mb = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim), nn.SiLU(),
                                nn.Conv2d(2 * dim, 2 * dim, 3, stride=2, padding=1, groups=2 * dim),
                                nn.BatchNorm2d(2 * dim), nn.SiLU(),
                                SqueezeExcite(2 * dim, 4, nn.SiLU(), nn.Sigmoid()),
                                nn.Conv2d(2 * dim, dim, 1), nn.BatchNorm2d(dim))
        self.top = nn.Sequential(nn.Conv2d(dim, 3 * dim, 1), nn.BatchNorm2d(3 * dim), nn.SiLU())
        self.fc = nn.Linear(3 * dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.top(self.mb(self.stem(x))), 1), 1))


class ResNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.body = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(),
                                  nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim))
        self.down = nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.down(F.relu(x + self.body(x))))
        return self.fc(x.mean([2, 3]))


class NHWCNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.Hardswish(),
                                 nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1), nn.BatchNorm2d(2 * dim),
                                 nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x.permute(0, 3, 1, 2)))


class SoftmaxNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.Mish(),
                                 nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.BatchNorm2d(dim), nn.ReLU(),
                                 SqueezeExcite(dim, 4, nn.ReLU(), nn.Hardsigmoid()),
                                 nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim), nn.Hardswish())
        self.fc = nn.Linear(2 * dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(self.net(x), 1), 1)
        return F.softmax(self.fc(x), dim=1)


class DynamicHW(nn.Module):
    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, dim, 3, stride=2)
        self.conv2 = nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * dim, 2 * dim, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(2 * dim, CLASSES) * 0.3)
        self.bias = nn.Parameter(torch.randn(CLASSES) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.softplus(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        x = F.interpolate(self.conv2(x), scale_factor=2.0, mode="nearest")
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        low = x.mean() - x.std()
        x = torch.clamp(self.conv3(x), min=low)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) @ self.weight + self.bias


def randomize(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics (else they are the identity) and eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def export(model: nn.Module, path: Path, *, nhwc: bool = False, opset: int = 17, dynamo: bool = False,
           dynamic_hw: bool = False) -> None:
    shape = (2, SIZE, SIZE, 3) if nhwc else (2, 3, SIZE, SIZE)
    x = torch.randn(*shape)
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset, input_names=["image"],
                          output_names=["scores"], dynamic_shapes=({0: batch},), external_data=False)
    else:
        axes = {0: "batch"} if not dynamic_hw else {0: "batch", 2: "height", 3: "width"}
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["scores"], dynamic_axes={"image": axes, "scores": {0: "batch"}})


def main(out: Path, only: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    jobs = {
        "vit": (ViT, {}), "vit_dynamo": (ViT, dict(dynamo=True, opset=18)), "vit_registers": (RegisterViT, {}),
        "swin": (Swin, dict(opset=14)), "convnext": (ConvNeXt, {}), "shufflenet": (ShuffleNet, {}),
        "se_silu": (SESiLU, {}), "resnet_dynamo": (ResNet, dict(dynamo=True, opset=18)),
        "nhwc": (NHWCNet, dict(nhwc=True)), "softmax_head": (SoftmaxNet, dict(opset=18)),
        "dynamic_hw": (DynamicHW, dict(dynamic_hw=True)),
    }
    for i, (name, (cls, kwargs)) in enumerate(jobs.items()):
        if only and name not in only:
            continue
        torch.manual_seed(i if name != "vit_dynamo" else list(jobs).index("vit"))
        model = randomize(cls())
        path = out / f"{name}.onnx"
        with torch.no_grad():
            export(model, path, **kwargs)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent, sys.argv[2:])
