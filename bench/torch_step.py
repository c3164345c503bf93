"""Times training steps of the reference CNN in PyTorch (Debian's python3-torch) and prints one
JSON line, so that `npm run bench -- step` can report tfjs backends beside PyTorch in one run.
Model: conv3x3(32)-relu-maxpool2, conv3x3(64)-relu-maxpool2, dense(128)-relu, dense(10);
input 1x28x28, Adam, softmax cross-entropy."""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--warmup", type=int, default=3)
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(1)
model = nn.Sequential(
    nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
images = torch.rand(args.batch, 1, 28, 28)
labels = torch.randint(0, 10, (args.batch,))

times = []
for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    optimizer.zero_grad()
    loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    loss.item()
    if i >= args.warmup:
        times.append((time.perf_counter() - start) * 1000)

print(json.dumps({
    "backend": f"pytorch-{torch.__version__}",
    "device": f"CPU ({args.threads} threads)",
    "batch": args.batch,
    "steps": args.steps,
    "msPerStep": statistics.median(times),
    "minMs": min(times),
}))
