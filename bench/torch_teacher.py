"""For `npm run bench -- teacher`: torchvision's ResNet-50 (seeded random weights, eval mode)
saved as OUT/resnet50.safetensors and exported as OUT/resnet50.onnx (the same network for the
Cohort rows), then its forward pass timed in PyTorch; prints one JSON line."""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from pth_to_safetensors import save_safetensors  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--reps", type=int, default=3)
parser.add_argument("--warmup", type=int, default=1)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = torchvision.models.resnet50().eval()
images = torch.rand(args.batch, 3, args.size, args.size)
os.makedirs(args.out, exist_ok=True)
save_safetensors(model.state_dict(), os.path.join(args.out, "resnet50.safetensors"))
torch.onnx.export(model, images[:1], os.path.join(args.out, "resnet50.onnx"), input_names=["images"], output_names=["logits"],
                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
times = []
with torch.no_grad():
    for i in range(args.warmup + args.reps):
        start = time.perf_counter()
        model(images)
        if i >= args.warmup:
            times.append(1000 * (time.perf_counter() - start))
print(json.dumps({"backend": f"PyTorch {torch.__version__.split('+')[0]}", "device": f"CPU, {args.threads} threads",
                  "msPerForward": statistics.median(times), "minMs": min(times), "reps": len(times)}))
