#!/bin/bash
# Random Erasing's area on validation (split seeds 100, 101). Usage: queue4.sh PID_TO_WAIT_FOR
cd /tmp/runtree
export PYTHONPATH=/tmp/runtree
D=folder:/work/shared/data/cifar10-jpeg.tar.xz
R="--classifier wrn-10-1 --epochs 16 --batch-size 64 --lr 0.1 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --glico-p 0.75 --glico-t 0.1,0.2,0.3,0.4,0.5 --spc 10 --quiet"
O=/work/main/runs/i16
ev() { name=$1; shift; echo "=== $(date -u +%T) start $name"; python -m glico --threads 1 evaluate --data $D $R "$@" --out $O/$name > $O/$name.log 2>&1; echo "=== $(date -u +%T) end $name rc=$?"; }
while kill -0 $1 2>/dev/null; do sleep 5; done
ev val-erase033 --seeds 100,101 --validation 100 --methods random-erasing --fit-epochs 400
ev val-erase040 --seeds 100,101 --validation 100 --methods random-erasing --fit-epochs 400 --erasing-scale 0.02,0.4
