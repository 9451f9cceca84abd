#!/bin/sh
# usage: sh run.sh OUT.jsonl SEED_FROM SEED_TO RR_VW,RR_CM CFG.json  (one process, lowest priority, single-threaded BLAS)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec nice -n 19 /tmp/evalvenv/bin/python mc.py "$@"
