"""The PyTorch side of the GPU check (bench/gpu/run.sh): on the same parameter lists as
bench/gpu/bench.ts, time

- a device-to-device copy (the bound: bytes read plus bytes written),
- KOALA-M as the official code does it, restated with per-layer torch ops (element-wise kernels
  per tensor and a host read of three norms per tensor, as the reference's .item() calls do),
- torch's fused AdamW.

Usage: python3 bench/gpu/torch_bench.py KOALA_JSON OUT_JSON
(KOALA_JSON is bench/gpu/bench.ts's output; the lists are read from it.)
"""
import json
import math
import sys

import torch


def timed(fn, steps, batches=5):
    """Milliseconds per call: best of `batches` CUDA-event-timed batches of `steps` calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(batches):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / steps)
    return out


class PerLayerKoalaM:
    """KOALA-M one tensor at a time, in the official code's manner (defaults, weight decay 5e-4)."""

    def __init__(self, params, grads, wd=5e-4, kappa=0.9, eps=1e-9):
        self.x, self.g = params, grads
        self.v = [torch.zeros_like(p) for p in params]
        self.a = [torch.zeros_like(p) for p in params]
        self.wd, self.kappa, self.eps = wd, kappa, eps
        self.n = sum(p.numel() for p in params)
        self.P = torch.tensor([[0.1, 0.0], [0.0, 0.1]], dtype=torch.float64)
        self.qx, self.qv, self.R = 0.01, 0.01, 1.0
        self.F = torch.tensor([[1.0, 1.0], [0.0, kappa]], dtype=torch.float64)

    def predict(self):
        d = 0.0
        for x, v, a in zip(self.x, self.v, self.a):
            d += (a - x).pow(2).sum().item()
            x.add_(v)
            v.mul_(self.kappa)
        self.qx = 0.9 * self.qx + 0.1 * math.sqrt(d) / self.n
        self.P = self.F @ self.P @ self.F.T + torch.diag(torch.tensor([self.qx, self.qv], dtype=torch.float64))

    def update(self, loss, loss_sq):
        self.R = 0.9 * self.R + 0.1 * loss_sq
        gains = []
        for x, g, v, a in zip(self.x, self.g, self.v, self.a):
            if g.norm().item() < self.eps:
                continue
            h = g + self.wd * x
            hh = h.pow(2).sum().item()
            loss_l = loss + 0.5 * self.wd * x.pow(2).sum().item()
            s = hh * self.P[0, 0].item() + self.R
            x.sub_(h, alpha=loss_l * self.P[0, 0].item() / s)
            v.sub_(h, alpha=loss_l * self.P[1, 0].item() / s)
            a.mul_(0.9).add_(x, alpha=0.1)
            gains.append(hh / s)
        if gains:
            m = max(gains)
            H = torch.tensor([[m, 0.0], [0.0, 0.0]], dtype=torch.float64)
            self.P = self.P - self.P @ H @ self.P.T

    def step(self):
        self.predict()
        self.update(0.5, 0.3)


def tensors(sizes, value):
    return [torch.full((n,), value, device="cuda", dtype=torch.float32) for n in sizes]


def main():
    koala = json.load(open(sys.argv[1]))
    lists = {}
    for t in koala["timings"]:
        lists.setdefault(t["list"], t["sizes"])
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": []}
    for name, sizes in lists.items():
        n = sum(sizes)
        steps = 10 if n >= 64e6 else 40
        src, dst = torch.empty(n, device="cuda"), torch.empty(n, device="cuda")
        copy = timed(lambda: dst.copy_(src), steps)
        del src, dst
        x, g = tensors(sizes, 0.01), [torch.sin(torch.arange(m, device="cuda", dtype=torch.float32)) * 1e-3 for m in sizes]
        per_layer = PerLayerKoalaM(x, g)
        official = timed(per_layer.step, max(3, steps // 10), batches=3)
        del per_layer
        params = [torch.nn.Parameter(t) for t in tensors(sizes, 0.01)]
        for p, gr in zip(params, g):
            p.grad = gr.clone()
        adamw = torch.optim.AdamW(params, lr=1e-3, fused=True)
        fused = timed(adamw.step, steps)
        del adamw, params, x, g
        torch.cuda.empty_cache()
        results["rows"].append({"list": name, "params": n, "tensors": len(sizes), "copyMs": copy,
                                "officialKoalaMMs": official, "fusedAdamWMs": fused})
        print(f"{name:28s} copy {min(copy):.4f} ms  per-layer KOALA-M {min(official):.3f} ms  fused AdamW {min(fused):.4f} ms", flush=True)
    json.dump(results, open(sys.argv[2], "w"), indent=2)


if __name__ == "__main__":
    main()
