"""Converts a PyTorch state dict (.pth, e.g. torchvision's ImageNet weights) to safetensors, the
format Cohort's `model.weights` reads:

    python3 scripts/pth_to_safetensors.py resnet50-11ad3fa6.pth resnet50.safetensors

The writer is here (a JSON header and the raw little-endian tensors) so that only torch is
needed, not the `safetensors` package (which Debian does not ship)."""
import json
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def save_safetensors(tensors, path):
    """Writes {name: tensor} as safetensors: 8-byte LE header length, JSON header, data."""
    header, chunks, offset = {}, [], 0
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        data = t.view(torch.uint8).numpy().tobytes() if t.dim() > 0 else t.reshape(1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for chunk in chunks:
            f.write(chunk)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python3 pth_to_safetensors.py IN.pth OUT.safetensors")
    state = torch.load(sys.argv[1], map_location="cpu")
    state = state.get("state_dict", state) if isinstance(state, dict) else state.state_dict()
    save_safetensors(state, sys.argv[2])
    print(f"{len(state)} tensors written to {sys.argv[2]}")
