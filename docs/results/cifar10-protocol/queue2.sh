#!/bin/bash
# Rebalanced tail of the issue 16 runs. Usage: queue2.sh A|C1|C2 PID_TO_WAIT_FOR
cd /tmp/runtree
export PYTHONPATH=/tmp/runtree
D=folder:/work/shared/data/cifar10-jpeg.tar.xz
R="--classifier wrn-10-1 --epochs 16 --batch-size 64 --lr 0.1 --weight-decay 5e-3 --schedule cosine --loss laplacian+pixel --glico-p 0.75 --glico-t 0.1,0.2,0.3,0.4,0.5 --spc 10 --quiet"
O=/work/main/runs/i16
ALL=autoaugment,trivialaugment,mixup,cutmix,randaugment,cutout
ev() { name=$1; shift; echo "=== $(date -u +%T) start $name"; python -m glico --threads 1 evaluate --data $D $R "$@" --out $O/$name > $O/$name.log 2>&1; echo "=== $(date -u +%T) end $name rc=$?"; }
while kill -0 $2 2>/dev/null; do sleep 5; done
case $1 in
A)  for s in 1 2; do ev test-p05-s$s --seeds $s --baseline-p 0.5 --methods $ALL --fit-epochs 400; done
    ev test-p1-s2 --seeds 2 --methods $ALL --fit-epochs 400
    for s in 0 1; do ev test-fit400-s$s --seeds $s --methods glico --fit-epochs 400; done ;;
C1) ev test-fit2000-s2 --seeds 2 --methods glico --fit-epochs 200 --fit-oversample-to 1000 ;;
C2) ev test-fit400-s2 --seeds 2 --methods glico --fit-epochs 400
    ev test-baseline --seeds 0,1,2 --methods baseline --fit-epochs 400 ;;
esac
