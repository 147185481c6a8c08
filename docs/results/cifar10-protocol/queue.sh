#!/bin/bash
# Issue 16 CPU runs, second plan (the 0.4.0 table is not reproduced bit for bit by this code, so both
# sides of every comparison are rerun here). Usage: queue.sh A|B PID_TO_WAIT_FOR
cd /tmp/runtree
export PYTHONPATH=/tmp/runtree
D=folder:/work/shared/data/cifar10-jpeg.tar.xz
R="--classifier wrn-10-1 --epochs 16 --batch-size 64 --lr 0.1 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --glico-p 0.75 --glico-t 0.1,0.2,0.3,0.4,0.5 --spc 10 --quiet"
O=/work/main/runs/i16
ALL=autoaugment,trivialaugment,mixup,cutmix,randaugment,cutout
ev() { name=$1; shift; echo "=== $(date -u +%T) start $name"; python -m glico --threads 1 evaluate --data $D $R "$@" --out $O/$name > $O/$name.log 2>&1; echo "=== $(date -u +%T) end $name rc=$?"; }
while kill -0 $2 2>/dev/null; do sleep 5; done
if [ "$1" = A ]; then
  for s in 1 2; do ev test-p05-s$s --seeds $s --baseline-p 0.5 --methods $ALL --fit-epochs 400; done
  ev test-p1-s2 --seeds 2 --methods $ALL --fit-epochs 400
  for s in 0 1 2; do ev test-fit400-s$s --seeds $s --methods glico --fit-epochs 400; done
  ev test-fit2000-s2 --seeds 2 --methods glico --fit-epochs 200 --fit-oversample-to 1000
else
  ev val-p1-s101 --seeds 101 --validation 100 --methods autoaugment,mixup --fit-epochs 400
  for s in 100 101; do ev val-p05-s$s --seeds $s --validation 100 --baseline-p 0.5 --methods autoaugment,mixup --fit-epochs 400; done
  ev test-p1-s0 --seeds 0 --methods autoaugment,trivialaugment,mixup,cutmix,randaugment --fit-epochs 400
  ev test-p1-s1 --seeds 1 --methods $ALL --fit-epochs 400
  for s in 0 1; do ev test-fit2000-s$s --seeds $s --methods glico --fit-epochs 200 --fit-oversample-to 1000; done
fi
