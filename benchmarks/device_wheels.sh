#!/usr/bin/env bash
# Here (a machine with PyPI): fetch the pure-Python wheels that the lent GPU machine's image lacks
# (it has torch, numpy, scipy, pandas, matplotlib, tensorboard, rich, tqdm, PyYAML, cloudpickle,
# but neither gymnasium nor stable-baselines3) into .whl/, for `benchmarks/device_check.sh`.
# The versions are this project's tested ones. Then: device run with carry [".whl"] (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
# setuptools too: installing rltransfer there builds it without isolation, and an image's older
# setuptools (< 70.1, without bdist_wheel) fails that build.
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
    stable-baselines3==2.9.2 gymnasium==1.4.0 farama-notifications==0.0.6 setuptools==84.2.1
ls -l .whl
