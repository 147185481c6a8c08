#!/bin/bash
# The issue 16 runs, as they were run (commit 00bdefe checked out in a worktree; two of these at a time,
# one thread each, on a 2-core CPU). Then: python make_tables.py "$O" .
D=folder:/work/shared/data/cifar10-jpeg.tar.xz
R="--classifier wrn-10-1 --epochs 16 --batch-size 64 --lr 0.1 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --glico-p 0.75 --glico-t 0.1,0.2,0.3,0.4,0.5 --spc 10 --quiet --fit-epochs 400"
O=${O:-runs/i16}
ALL=autoaugment,trivialaugment,mixup,cutmix,randaugment,cutout
ev() { name=$1; shift; python -m glico --threads 1 evaluate --data $D $R "$@" --out $O/$name > $O/$name.log 2>&1; }
mkdir -p "$O"
# validation (split seeds 100, 101)
for s in 100 101; do
  ev val-p1-s$s --seeds $s --validation 100 --methods autoaugment,mixup
  ev val-p05-s$s --seeds $s --validation 100 --baseline-p 0.5 --methods autoaugment,mixup
  ev val-fit2000-s$s --seeds $s --validation 100 --methods glico --fit-epochs 200 --fit-oversample-to 1000
done
ev val-fit400 --seeds 100,101 --validation 100 --methods glico
ev val-erase033 --seeds 100,101 --validation 100 --methods random-erasing
ev val-erase040 --seeds 100,101 --validation 100 --methods random-erasing --erasing-scale 0.02,0.4
# test set (seeds 0, 1, 2); cutout at p = 1 on seed 0 ran as repro-cutout-s0
ev repro-cutout-s0 --seeds 0 --methods cutout
ev test-p1-s0 --seeds 0 --methods autoaugment,trivialaugment,mixup,cutmix,randaugment
for s in 1 2; do ev test-p1-s$s --seeds $s --methods $ALL; done
for s in 0 1 2; do
  ev test-p05-s$s --seeds $s --baseline-p 0.5 --methods $ALL
  ev test-fit400-s$s --seeds $s --methods glico
  ev test-fit2000-s$s --seeds $s --methods glico --fit-epochs 200 --fit-oversample-to 1000
done
ev test-baseline --seeds 0,1,2 --methods baseline
