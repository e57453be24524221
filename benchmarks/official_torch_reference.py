"""The papers' ViT and SL-ViT as the official PyTorch code writes them, timed
on this machine: the baseline for `benchmarks.throughput`'s torch figures.

    python -m benchmarks.official_torch_reference            # batch 128, 64 px, 200 classes

A plain-PyTorch re-implementation of the authors' small-dataset ViT
(lucidrains-style: `nn.Linear` qkv without bias, `einops`-order patches,
`masked_fill` diagonal mask, learned temperature, SPT as pad + crop + concat
+ LayerNorm + Linear), because the repository itself cannot be fetched here.
Same shapes and parameter counts as `create_model("vit"/"sl_vit",
num_classes=200, image_size=64)`. Torch only, by nature (it is the baseline).
"""

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim, heads, head_dim, lsa):
        super().__init__()
        self.heads, self.lsa = heads, lsa
        self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim)
        scale = head_dim**-0.5
        self.scale = nn.Parameter(scale * torch.ones(heads, 1, 1)) if lsa else scale

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        dots = torch.matmul(q * self.scale, k.transpose(-1, -2))
        if self.lsa:
            dots = dots.masked_fill(torch.eye(n, dtype=torch.bool), -987654321)
        out = torch.matmul(dots.softmax(-1), v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class Block(nn.Module):
    def __init__(self, dim, heads, head_dim, mlp_dim, lsa):
        super().__init__()
        self.attention_norm, self.mlp_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, head_dim, lsa)
        self.mlp = FeedForward(dim, mlp_dim)

    def forward(self, x):
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ViT(nn.Module):
    def __init__(self, spt_lsa, image_size=64, patch=8, dim=192, depth=9, heads=12, head_dim=16, mlp_dim=384, classes=200):
        super().__init__()
        self.spt, self.patch = spt_lsa, patch
        channels = 15 if spt_lsa else 3
        patch_dim = patch * patch * channels
        self.patch_norm = nn.LayerNorm(patch_dim) if spt_lsa else nn.Identity()
        self.projection = nn.Linear(patch_dim, dim)
        tokens = (image_size // patch) ** 2
        self.position = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, head_dim, mlp_dim, spt_lsa) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))

    def forward(self, x):
        if self.spt:
            s, (h, w) = self.patch // 2, x.shape[2:]
            padded = F.pad(x, (s, s, s, s))
            shifted = [padded[:, :, s + dy * s : s + dy * s + h, s + dx * s : s + dx * s + w] for dy, dx in ((-1, -1), (-1, 1), (1, -1), (1, 1))]
            x = torch.cat([x, *shifted], 1)
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)
        x = self.projection(self.patch_norm(x))
        x = torch.cat([self.class_token.expand(b, -1, -1), x], 1) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])


class Runner:
    """One model of the official code with its AdamW and a fixed batch:
    `train(steps)` and `infer(steps)` each return img/s (the first call of
    each also warms up)."""

    def __init__(self, spt_lsa, batch_size, image_size=64, classes=200, seed=0, clock=time.perf_counter):
        torch.manual_seed(seed)
        self.clock = clock
        self.batch_size = batch_size
        self.model = ViT(spt_lsa, image_size=image_size, classes=classes)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), 1e-3, weight_decay=0.05)
        self.x = torch.rand(batch_size, 3, image_size, image_size)
        self.y = torch.randint(0, classes, (batch_size,))

    def step(self):
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def train(self, steps):
        self.model.train()
        start = self.clock()
        for _ in range(steps):
            self.step()
        return self.batch_size * steps / (self.clock() - start)

    def infer(self, steps):
        self.model.eval()
        with torch.no_grad():
            start = self.clock()
            for _ in range(steps):
                self.model(self.x)
            return self.batch_size * steps / (self.clock() - start)


def images_per_second(spt_lsa, batch_size, steps):
    """`(train, inference)` img/s: AdamW + cross-entropy steps, then no-grad forwards."""
    runner = Runner(spt_lsa, batch_size)
    runner.train(2)
    train = runner.train(steps)
    runner.infer(1)
    return train, runner.infer(steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    print("| official-style PyTorch | train img/s | infer img/s |\n|---|---:|---:|")
    for name, spt_lsa in (("ViT", False), ("SL-ViT", True)):
        train, inference = images_per_second(spt_lsa, args.batch_size, args.steps)
        print(f"| {name} | {train:.1f} | {inference:.1f} |", flush=True)


if __name__ == "__main__":
    main()
