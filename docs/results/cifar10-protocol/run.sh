#!/bin/bash
# Issue 16 CPU runs. One worker = one queue of evaluate commands, one thread each.
cd /tmp/runtree
export PYTHONPATH=/tmp/runtree
D=folder:/work/shared/data/cifar10-jpeg.tar.xz
R="--classifier wrn-10-1 --epochs 16 --batch-size 64 --lr 0.1 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --glico-p 0.75 --glico-t 0.1,0.2,0.3,0.4,0.5 --spc 10 --quiet"
O=/work/main/runs/i16
ev() { name=$1; shift; echo "=== $(date -u +%T) start $name"; python -m glico --threads 1 evaluate --data $D $R "$@" --out $O/$name > $O/$name.log 2>&1; echo "=== $(date -u +%T) end $name rc=$?"; }
if [ "$1" = A ]; then
  ev repro-cutout-s0 --seeds 0 --methods cutout --fit-epochs 400
  for s in 0 1 2; do ev test-p05-s$s --seeds $s --baseline-p 0.5 --methods autoaugment,trivialaugment,mixup,cutmix,randaugment,cutout --fit-epochs 400; done
  for s in 0 1 2; do ev test-erase04-s$s --seeds $s --erasing-scale 0.02,0.4 --methods random-erasing --fit-epochs 400; done
  for s in 100 101; do ev val-fit2000-s$s --seeds $s --validation 100 --methods glico --fit-epochs 200 --fit-oversample-to 1000; done
else
  for s in 100 101; do ev val-p1-s$s --seeds $s --validation 100 --methods autoaugment,mixup --fit-epochs 400; done
  for s in 100 101; do ev val-p05-s$s --seeds $s --validation 100 --baseline-p 0.5 --methods autoaugment,trivialaugment,mixup --fit-epochs 400; done
  for s in 0 1 2; do ev test-fit2000-s$s --seeds $s --methods glico,glico+autoaugment --fit-epochs 200 --fit-oversample-to 1000; done
fi
