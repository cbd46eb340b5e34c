"""StyleGAN2 generator and discriminator for UV displacement maps (paper sec. 3.2; REFERENCE 4).

Module names, parameter shapes and registration order follow the published HeadCraft
checkpoints (docs/STYLEGAN_CHECKPOINT.md), so their state dicts load by exact name. The network
is written for this project; its choices are the published model's:
  - mapping: z normalised, FC layers with lr multiplier 0.01 and lrelu(0.2) * sqrt(2), w_avg
    tracked with beta 0.995; truncation in W (w_avg + psi (w - w_avg));
  - synthesis: a learned 4x4 constant, per block a modulated 3x3 conv followed by a smooth x2
    upsample, a second modulated conv, and a skip ToRGB; per-layer constant noise buffers;
  - smooth resampling: [1,3,3,1] (x) [1,3,3,1] / 64 with replicate padding, unit DC gain;
  - discriminator: residual blocks, minibatch standard deviation (group 4, 1 channel).
Resolution, channel widths, mapping depth and output channels are arguments, so small models
train on a CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)
CLAMP = 256.0
NOISE_MODES = ("random", "const", "none", "const-none")


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: stored weights are N(0, 1) / lr_multiplier."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x


def smooth_kernel() -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return (k[:, None] * k[None, :] / 64.0)[None, None]


def _up_1d(x, dim):
    """x2 along one axis: nearest then [1,3,3,1]/8 with replicate edges, as two phases:
    even outputs (x[i-1] + x[i]) / 2, odd outputs (x[i-1] + 6 x[i] + x[i+1]) / 8."""
    n = x.shape[dim]
    xp = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim)
    a, b, c = xp.narrow(dim, 0, n), xp.narrow(dim, 1, n), xp.narrow(dim, 2, n)
    return torch.stack([0.5 * (a + b), 0.125 * (a + c) + 0.75 * b], dim + 1).flatten(dim, dim + 1)


def _down_1d(x, dim):
    """[1,3,3,1]/8 with replicate edges (2 before, 1 after), every other sample."""
    n = x.shape[dim]
    xp = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim)
    tap = lambda t: xp.narrow(dim, t, n)  # noqa: E731
    out = (tap(0) + 3 * tap(1) + 3 * tap(2) + tap(3)) / 8
    return out.index_select(dim, torch.arange(0, n, 2, device=x.device))


class _Smooth(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(smooth_kernel(), requires_grad=False)

    def _standard(self) -> bool:
        """The separable fast path holds for the published kernel; any other uses the conv."""
        return torch.equal(self.kernel.detach().cpu(), smooth_kernel())

    def _blur(self, x):
        n, c, h, w = x.shape
        x = F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (2, 1, 2, 1), mode="replicate"), self.kernel)
        return x.reshape(n, c, h, w)


class SmoothUpsample(_Smooth):
    """x2 nearest upsampling then the [1,3,3,1] blur (unit DC gain, replicate padding)."""

    def forward(self, x):
        if self._standard():
            return _up_1d(_up_1d(x, 3), 2)
        return self._blur(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SmoothDownsample(_Smooth):
    """The [1,3,3,1] blur then every other sample."""

    def forward(self, x):
        if self._standard():
            return _down_1d(_down_1d(x, 3), 2)
        return self._blur(x)[:, :, ::2, ::2]


def modulated_conv2d(x, weight, styles, padding: int, demodulate: bool):
    """Per-sample weights weight * style (input channels), optionally demodulated, as one
    grouped convolution."""
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    w = weight[None] * styles.reshape(n, 1, in_ch, 1, 1)
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
    x = F.conv2d(x.reshape(1, n * in_ch, *x.shape[2:]), w.reshape(n * out_ch, in_ch, kh, kw),
                 padding=padding, groups=n)
    return x.reshape(n, out_ch, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv at the input resolution, optional x2 upsample, noise, bias, lrelu."""

    noise_const: torch.Tensor   # buffer
    resampler: nn.Module        # set only on a layer that upsamples

    def __init__(self, in_channels, out_channels, w_dim, resolution, resampler=None):
        super().__init__()
        self.resolution = resolution
        if resampler is not None:          # shared with the block (one kernel, two names)
            self.resampler = resampler
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode: str = "random"):
        x = modulated_conv2d(x, self.weight, self.affine(w), padding=1, demodulate=True)
        if hasattr(self, "resampler"):
            x = self.resampler(x)
        r = self.resolution
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, r, r, device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode in ("const", "const-none"):
            noise = self.noise_const
            if noise_mode == "const-none":     # the reference's mode: none right of 58.5 % of the width
                noise = noise.clone()
                noise[:, int(0.585 * r):] = 0
            x = x + noise * self.noise_strength
        return _bias_lrelu_clamp(x, self.bias)


def _bias_lrelu_clamp(x, bias):
    """clamp(lrelu(x + bias) * sqrt(2), +-256); in place when no gradient is recorded."""
    if torch.is_grad_enabled():
        return (F.leaky_relu(x + bias[None, :, None, None], 0.2) * LRELU_GAIN).clamp(-CLAMP, CLAMP)
    x = x.add_(bias[None, :, None, None])
    return F.leaky_relu_(x, 0.2).mul_(LRELU_GAIN).clamp_(-CLAMP, CLAMP)


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.style_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x, w):
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.style_gain, padding=0, demodulate=False)
        return (x + self.bias[None, :, None, None]).clamp(-CLAMP, CLAMP)


class SynthesisPrologue(nn.Module):
    def __init__(self, channels, w_dim, img_channels):
        super().__init__()
        self.const = nn.Parameter(torch.randn(channels, 4, 4))
        self.conv1 = SynthesisLayer(channels, channels, w_dim, 4)
        self.torgb = ToRGBLayer(channels, img_channels, w_dim)

    def forward(self, ws, noise_mode):
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = self.conv1(x, ws[:, 0], noise_mode)
        return x, self.torgb(x, ws[:, 1])


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels):
        super().__init__()
        self.resampler = SmoothUpsample()
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, resampler=self.resampler)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)

    def forward(self, x, img, ws, noise_mode):
        """ws: (N, 3, w_dim) for conv0, conv1 and torgb."""
        x = self.conv0(x, ws[:, 0], noise_mode)
        x = self.conv1(x, ws[:, 1], noise_mode)
        return x, self.resampler(img) + self.torgb(x, ws[:, 2])


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // resolution, channel_max)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=16384, channel_max=512):
        super().__init__()
        levels = int(math.log2(img_resolution))
        if 2 ** levels != img_resolution or img_resolution < 8:
            raise ValueError(f"resolution {img_resolution}: a power of two, at least 8")
        self.block_resolutions = [2 ** i for i in range(2, levels + 1)]
        self.num_ws = 2 * (len(self.block_resolutions) + 1)
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        self.blocks = nn.ModuleList()      # registered before first_block, as in the published files
        self.first_block = SynthesisPrologue(ch(4), w_dim, img_channels)
        for r in self.block_resolutions[1:]:
            self.blocks.append(SynthesisBlock(ch(r // 2), ch(r), w_dim, r, img_channels))

    def forward(self, ws, noise_mode: str = "random"):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise mode {noise_mode!r}; choose one of {', '.join(NOISE_MODES)}")
        x, img = self.first_block(ws[:, 0:2], noise_mode)
        for i, block in enumerate(self.blocks):    # w 2i+1 .. 2i+3: torgb shares the next conv0's
            x, img = block(x, img, ws[:, 2 * i + 1:2 * i + 4], noise_mode)
        return img


class MappingNetwork(nn.Module):
    w_avg: torch.Tensor   # buffer

    def __init__(self, z_dim, w_dim, num_ws, num_layers=4, lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.num_ws, self.w_avg_beta = num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnectedLayer(a, b, "lrelu", lr_multiplier)
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = True):
        x = normalize_2nd_moment(z)
        for layer in self.layers:
            x = layer(x)
        if self.training and update_w_avg:
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        x = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


class Generator(nn.Module):
    def __init__(self, z_dim=512, w_dim=512, w_num_layers=4, img_resolution=256, img_channels=6,
                 channel_base=16384, channel_max=512):
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, w_num_layers)

    def forward(self, z, truncation_psi=1.0, noise_mode="random"):
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode)


class EqualizedConv2d(nn.Module):
    """Conv with runtime weight scaling 1/sqrt(fan-in); resampling (if any) comes first."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", resample=None):
        super().__init__()
        if resample is not None:
            self.resample = resample
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2

    def forward(self, x, gain: float = 1.0):
        if hasattr(self, "resample"):
            x = self.resample(x)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        act_gain = LRELU_GAIN if self.activation == "lrelu" else 1.0
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2)
        return (x * (act_gain * gain)).clamp(-CLAMP * gain, CLAMP * gain)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        down = SmoothDownsample()          # one kernel shared by conv1 and skip
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", resample=down)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, resample=down)

    def forward(self, x):
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStd(nn.Module):
    def __init__(self, group_size=4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        y = x.reshape(g, -1, 1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=[2, 3, 4])     # (n/g, 1)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], 1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, channels, resolution=4):
        super().__init__()
        self.mbstd = MinibatchStd()
        self.conv = EqualizedConv2d(channels + 1, channels, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(channels * resolution ** 2, channels, "lrelu")
        self.out = FullyConnectedLayer(channels, 1)

    def forward(self, x):
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    def __init__(self, img_resolution=256, img_channels=6, channel_base=16384, channel_max=512):
        super().__init__()
        levels = int(math.log2(img_resolution))
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        layers = [EqualizedConv2d(img_channels, ch(img_resolution), 1, activation="lrelu")]
        for r in (2 ** i for i in range(levels, 2, -1)):
            layers.append(DiscriminatorBlock(ch(r), ch(r // 2)))
        layers.append(DiscriminatorEpilogue(ch(4)))
        self.net = nn.Sequential(*layers)

    def forward(self, img):
        return self.net(img)
