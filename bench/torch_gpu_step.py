"""PyTorch side of `npm run bench -- step --backend webgpu` (from shared/gpu-probe/torch_bench.py): the same models and training step (forward,
softmax cross-entropy, backward, Adam) on the GPU, for a side-by-side ratio with tfjs-webgpu.

    python3 torch_bench.py [--cases refcnn128,resnet18s64,resnet18i64] [--limit-s 150]

Each result is one line `RESULT <json>`. Step times are medians of per-step wall times with a
device synchronize at the end of each step, as the tfjs side awaits each step's loss.
Variants: fp32-strict (TF32 off: the arithmetic WebGPU does), default (PyTorch's defaults:
cuDNN may use TF32), bf16-amp-cl (autocast bf16 + channels_last: roughly the fastest plain PyTorch).
"""
import argparse
import json
import os
import signal
import statistics
import sys
import time

T0 = time.time()


def result(kind, **data):
    print("RESULT " + json.dumps({"kind": kind, "t": round(time.time() - T0, 1), **data}), flush=True)


ap = argparse.ArgumentParser()
ap.add_argument("--cases", default="refcnn128,resnet18s64,resnet18i64")
ap.add_argument("--variants", default="fp32-strict,default,bf16-amp-cl")
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--iters", type=int, default=30)
ap.add_argument("--limit-s", type=float, default=float(os.environ.get("TORCH_LIMIT_S", "150")))
ap.add_argument("--device", default=os.environ.get("TORCH_DEVICE", "cuda"))
args = ap.parse_args()


def on_alarm(signum, frame):
    result("watchdog", message=f"time limit {args.limit_s}s reached, exiting")
    os._exit(3)


signal.signal(signal.SIGALRM, on_alarm)
signal.alarm(max(1, int(args.limit_s)))

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
except Exception as e:  # noqa: BLE001
    result("error", where="import", message=repr(e))
    sys.exit(2)

dev = torch.device(args.device if (args.device != "cuda" or torch.cuda.is_available()) else "cpu")
info = {"torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(dev)}
if dev.type == "cuda":
    info.update(
        gpu=torch.cuda.get_device_name(0),
        capability=list(torch.cuda.get_device_capability(0)),
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
    )
result("torch", **info)


def reference_cnn(classes=10):
    # Cohort's reference CNN: conv3x3(32)-relu-maxpool2, conv3x3(64)-relu-maxpool2, dense128-relu, dense10 (valid padding)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, classes),
    )


def resnet18(stem, classes):
    m = torchvision.models.resnet18(num_classes=classes)
    if stem == "small":  # Cohort's 'small' stem: conv3x3/1, no pooling (CIFAR-style)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    return m


CASES = {
    "refcnn128": ("reference-cnn", lambda: reference_cnn(), (1, 28, 28), 10, 128),
    "refcnn32": ("reference-cnn", lambda: reference_cnn(), (1, 28, 28), 10, 32),
    "resnet18s64": ("resnet18-small32", lambda: resnet18("small", 10), (3, 32, 32), 10, 64),
    "resnet18i64": ("resnet18-imagenet224", lambda: resnet18("imagenet", 1000), (3, 224, 224), 1000, 64),
}


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def set_variant(v):
    strict = v == "fp32-strict"
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # PyTorch >= 2.9's API (the old flags warn there)
        conv.fp32_precision = "ieee" if strict else "tf32"  # cuDNN convolutions: TF32 by default
        torch.backends.cuda.matmul.fp32_precision = "ieee"  # PyTorch's default for matmul
    else:
        torch.backends.cudnn.allow_tf32 = not strict
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = v != "fp32-strict"


def time_case(key, variant, budget_s):
    name, make, shape, classes, batch = CASES[key]
    set_variant(variant)
    torch.manual_seed(0)
    model = make().to(dev)
    cl = variant == "bf16-amp-cl" and len(shape) == 3
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand((batch, *shape), device=dev) * 2 - 1
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch, device=dev) % classes
    amp = variant == "bf16-amp-cl" and dev.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    model.train()
    warm, times = [], []
    deadline = time.time() + budget_s
    loss = None
    for i in range(args.warmup + args.iters):
        s = time.perf_counter()
        loss = step()
        sync()
        ms = (time.perf_counter() - s) * 1000
        (warm if i < args.warmup else times).append(ms)
        if time.time() > deadline and len(times) >= 3:
            break
    last = float(loss.detach().float().cpu())
    model.eval()
    fwd = []
    with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(min(args.iters, 20) + 2):
            s = time.perf_counter()
            model(x)
            sync()
            if i >= 2:
                fwd.append((time.perf_counter() - s) * 1000)
    med = statistics.median(times)
    result(
        "torch-time", case=name, key=key, variant=variant, batch=batch,
        warmupMs=[round(t, 2) for t in warm], stepMsMedian=round(med, 3), stepMsMin=round(min(times), 3),
        steps=len(times), imagesPerS=round(batch * 1000 / med, 1), forwardMsMedian=round(statistics.median(fwd), 3),
        lastLoss=last,
    )
    del model, opt, x, y
    if dev.type == "cuda":
        torch.cuda.empty_cache()


cases = [c for c in args.cases.split(",") if c]
variants = [v for v in args.variants.split(",") if v]
per = max(5.0, (args.limit_s - 10) / max(1, len(cases) * len(variants)))
for key in cases:
    for v in variants:
        try:
            time_case(key, v, per * 0.6)
        except Exception as e:  # noqa: BLE001
            result("error", where=f"torch {key} {v}", message=repr(e)[:1500])
result("torch-done")
