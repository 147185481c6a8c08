"""FID of the issue-13 generators with the fixed reference set (no split or validation image of the grid):
the same fits as the evaluate run (deterministic on CPU, refitted here with its settings), the same FID code
as `glico evaluate --fid random-inception --fid-images 500`."""
import json, sys
import torch
torch.set_num_threads(1)
from glico.data import load_data, small_sample_split
from glico.experiments.evaluate import (EvaluateConfig, fid_extractor, fid_reference, fid_samples, fit_cdcgan_for,
                                        fit_glico, generated_fid, grid_rows)

src = json.load(open("runs/i13/b/results.json"))["config"]
seeds = [int(s) for s in sys.argv[1].split(",")]
cfg = EvaluateConfig(**{**src, "spcs": tuple(src["spcs"]), "seeds": (0, 1, 2), "methods": tuple(src["methods"]),
                        "glico_t": tuple(src["glico_t"]), "erasing_scale": tuple(src["erasing_scale"])})
data = load_data(cfg.data)
extractor = fid_extractor(cfg.fid)
reference = fid_reference(data.train, cfg.fid_images, extractor, "cpu", exclude=grid_rows(data.train, cfg))
out = []
for seed in seeds:
    train, _ = small_sample_split(data.train, 10, seed)
    model, _ = fit_glico(cfg.model, train, seed=seed, epochs=cfg.fit_epochs, batch_size=cfg.fit_batch_size,
                         progress=False)
    steps = 400  # the evaluate run's fit_steps at 10 per class (results.json recipe)
    gan, _ = fit_cdcgan_for(train, seed=seed, steps=steps, batch_size=cfg.fit_batch_size, device="cpu",
                            progress=False)
    for name, gen in (("glico", model), ("cdcgan", gan)):
        fid = generated_fid(fid_samples(gen, train, cfg.fid_images, seed, cfg.glico_t), extractor, reference, "cpu")
        out.append({"seed": seed, "method": name, "fid": fid})
        print(out[-1], flush=True)
json.dump(out, open(f"runs/i13/fid-rerun-{sys.argv[1].replace(',', '')}.json", "w"), indent=1)
