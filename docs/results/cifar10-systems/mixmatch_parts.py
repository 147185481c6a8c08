"""MixMatch's parts on the issue-13 CPU recipe: the same split, recipe and seed as glico evaluate's run."""
import json, sys, time
import torch
torch.set_num_threads(1)
from glico.data import load_data, small_sample_split
from glico.experiments.downstream import evaluate
from glico.experiments.evaluate import downstream_classifier, downstream_config
from glico.experiments.mixmatch import MixMatchConfig, train_mixmatch

variant = sys.argv[1]
mm = {"no-unlabeled-term": MixMatchConfig(unlabeled_weight=0.0), "no-ema": MixMatchConfig(ema=0.0)}[variant]
data = load_data("folder:/work/shared/data/cifar10-jpeg.tar.xz")
out = []
for seed in (0, 1, 2):
    train, _ = small_sample_split(data.train, 10, seed)
    cfg = downstream_config(100, 32, epochs=16, batch_size=64, lr=0.1, weight_decay=5e-3, flip=True, seed=seed,
                            device="cpu", progress=False, cosine=True)
    torch.manual_seed(seed)
    clf = downstream_classifier("wrn-10-1")(3, 10, 32)
    t0 = time.time()
    clf = train_mixmatch(clf, train.images, train.labels, train.images, 10, cfg, mm)
    acc = evaluate(clf, data.test.images, data.test.labels)
    out.append({"seed": seed, "variant": variant, **acc, "seconds": round(time.time() - t0, 1)})
    print(out[-1], flush=True)
json.dump(out, open(f"runs/i13/ablation/{variant}.json", "w"), indent=1)
