"""How colourful are a fit's samples? Mean per-pixel chroma (max - min over RGB) of 8 samples per class,
next to the training images'."""
import sys, torch
from glico import GLICO
from glico.data import load_data
def chroma(x): return float((x.max(1).values - x.min(1).values).mean())
data = load_data("folder:/work/scratch/mine")
print(f"training images: chroma {chroma(data.train.images):.4f}")
for run in sys.argv[1:]:
    m = GLICO.from_run(run)
    s = m.sample(torch.arange(m.num_classes).repeat_interleave(8), seed=0)
    r = m.reconstruct(torch.arange(len(data.train)))
    print(f"{run}: samples chroma {chroma(s):.4f}, reconstructions chroma {chroma(r):.4f}")
