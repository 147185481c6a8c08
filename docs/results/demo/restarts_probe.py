"""Probe (issue 12): per split seed, one GLICO fit; R classifier restarts per method and recipe; scored on validation.

Usage: python docs/results/demo/restarts_probe.py 100,101,102,103,104 3 probe.jsonl (appends one JSON line per restart)."""
import json, sys, time
import torch
torch.set_num_threads(1)
from glico.augment import GLICOAugmenter
from glico.data import load_data, small_sample_split, validation_split
from glico.experiments.downstream import TrainConfig, evaluate, train_classifier
from glico.experiments.evaluate import downstream_classifier
from glico.experiments.policies import build_policy
from glico.names import ModelSpec, build_model
from glico.training import FitConfig, fit

seeds = [int(s) for s in sys.argv[1].split(",")]
R = int(sys.argv[2]); out = sys.argv[3]
recipes = {
  "wrn": dict(clf="wrn-10-1", steps=1264, bs=64, lr=0.1, wd=5e-3, cos=True, p=0.5, t=(0.1,0.2,0.3,0.4)),
  "weak480": dict(clf="weak", steps=480, bs=50, lr=0.05, wd=5e-4, cos=False, p=0.5, t=(0.1,0.2,0.3,0.4)),
}
data = load_data("digits")
for seed in seeds:
    train, _ = small_sample_split(data.train, 5, seed)
    held = validation_split(data.train, 5, seed, 40)[0]
    c, h, w = train.images.shape[1:]; k = 10
    torch.manual_seed(seed)
    model = build_model(ModelSpec(image_shape=(c, h, w), num_classes=k, loss="laplacian+pixel", code_dim=128))
    t0 = time.time()
    fit(model, train.images, train.labels, config=FitConfig(epochs=1500, batch_size=128, seed=seed, progress=False))
    print("fit", seed, time.time() - t0, flush=True)
    for name, rc in recipes.items():
        for r in range(R):
            rs = seed * 1000 + r
            tcfg = TrainConfig(steps=rc["steps"], batch_size=min(rc["bs"], 50), lr=rc["lr"], weight_decay=rc["wd"],
                               cosine=rc["cos"], crop_pad=1, flip=False, seed=rs if r else seed, progress=False)
            row = {"seed": seed, "recipe": name, "restart": r}
            for method in ("baseline", "glico"):
                t1 = time.time()
                torch.manual_seed(rs if r else seed)
                clf = downstream_classifier(rc["clf"])(c, k, h)
                aug = GLICOAugmenter(model, p=rc["p"], seed=rs if r else seed, t_values=rc["t"])
                pol = build_policy(method, num_classes=k, glico_augmenter=aug, seed=rs if r else seed, image_size=h)
                train_classifier(clf, train.images, train.labels, tcfg, policy=pol, desc="x")
                row[method] = evaluate(clf, held.images, held.labels)["top1"]
                row[method + "_s"] = round(time.time() - t1, 1)
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(row, flush=True)
