#!/bin/bash
# The issue 13 runs, as they were run (commit c7f9134 checked out in a worktree; the two evaluate pieces at
# the same time, one thread each, on a 2-core CPU), then joined with glico merge.
D=folder:/work/shared/data/cifar10-jpeg.tar.xz
R="--classifier wrn-10-1 --epochs 16 --batch-size 64 --lr 0.1 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --glico-p 0.75 --glico-t 0.1,0.2,0.3,0.4,0.5 --spc 10 --quiet --fit-epochs 400 --seeds 0,1,2"
O=${O:-runs/i13}
ev() { name=$1; shift; python -m glico --threads 1 evaluate --data $D $R "$@" --out $O/$name > $O/$name.log 2>&1; }
mkdir -p "$O"
ev a --methods mixmatch,cosine-loss,random-erasing,baseline --unlabeled split &
ev b --methods cutout,glico,cdcgan --fid random-inception --fid-images 500 &
wait
python -m glico merge $O/a $O/b --out $O/all     # -> results.json, results.md here
# One command gives the same table: --preset table1 (six of the rows) plus cdcgan:
#   glico evaluate --data $D $R --methods baseline,glico,mixmatch,cutout,random-erasing,cosine-loss,cdcgan \
#       --unlabeled split --fid random-inception --fid-images 500 --out $O/one
# MixMatch's parts (the same splits, recipe and seeds), one process each:
mkdir -p $O/ablation
for v in no-unlabeled-term no-ema; do python mixmatch_parts.py $v > $O/ablation/$v.log & done; wait
# The generators' FID with the fixed reference set (commit b383ace), on the same (deterministic) fits:
for s in 0,1 2; do python fid_rerun.py $s > $O/fid-rerun-${s/,/}.log & done; wait
