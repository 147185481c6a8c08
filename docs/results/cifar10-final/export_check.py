"""Accuracy of the exported files on the CIFAR-10 test images, against model.json's test score."""
import json, sys, time
import numpy as np, torch, onnxruntime as ort
from glico.data import load_data
from glico.classify import load_classifier
m = sys.argv[1]
data = load_data("folder:/work/shared/data/cifar10-jpeg.tar.xz")
x, y = data.test.images, data.test.labels
want = json.load(open(f"{m}/model.json"))["test"]["top1"]
eager = load_classifier(m)
runs = {"torchscript": torch.jit.load(f"{m}/model.torchscript.pt"), "pt2": torch.export.load(f"{m}/model.pt2").module()}
sess = ort.InferenceSession(f"{m}/model.onnx")
runs["onnx"] = lambda b: torch.from_numpy(sess.run(["logits"], {"images": b.numpy()})[0])
with torch.no_grad():
    ref = torch.cat([eager(x[i:i+500]) for i in range(0, len(x), 500)])
    print(f"model.json test top-1 {want:.2f}; eager {100*(ref.argmax(1)==y).float().mean():.2f}")
    for name, f in runs.items():
        out = torch.cat([f(x[i:i+500]) for i in range(0, len(x), 500)])
        print(f"{name}: top-1 {100*(out.argmax(1)==y).float().mean():.2f}, max |logit - eager| {float((out-ref).abs().max()):.2e}, argmax differs on {int((out.argmax(1)!=ref.argmax(1)).sum())} images")
