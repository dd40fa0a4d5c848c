"""Export torchvision's ResNet-18 as an ONNX feature extractor for framefleet's onnx op: one 512-number
vector per frame (the network without its classifier). See docs/ops.md, "The onnx op".

    pip install torch torchvision onnx onnxscript     # to export only: framefleet needs none of them
    python examples/ops/export_resnet.py resnet18-features.onnx
    framefleet run clips/ -o features/ --pipeline examples/ops/resnet-features.yaml

The model takes `image`, N x 3 x 224 x 224 float32 (RGB, ImageNet-normalised), N dynamic, and returns
`features`, N x 512. The weights are stored inside the .onnx file (no .onnx.data beside it), so the one
file is all a job needs and all its fingerprint hashes. `--untrained` exports random weights, to try the
plumbing without downloading the ImageNet weights.
"""

from __future__ import annotations

import argparse

import torch
import torchvision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--untrained", action="store_true", help="random weights (no download)")
    args = parser.parse_args()

    weights = None if args.untrained else torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    model = torchvision.models.resnet18(weights=weights)
    model.fc = torch.nn.Identity()  # keep the 512 pooled features, drop the 1000 ImageNet classes
    model.eval()

    example = torch.zeros(2, 3, 224, 224)
    torch.onnx.export(
        model, (example,), args.output,
        input_names=["image"], output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),  # any number of frames per run
        external_data=False,                               # weights inside the one file
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
