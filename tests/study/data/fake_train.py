"""A stand-in training for study tests: marks epochs in the measured run, or fails on request.

python fake_train.py --seed S [--epochs 2] [--epoch-s 0.1] [--mode ok|oom|crash|hang]
"""

import argparse
import sys
import time

import joulecast

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--epoch-s", type=float, default=0.1)
parser.add_argument("--mode", default="ok")
parser.add_argument("--batch-size", type=int, default=8)
args = parser.parse_args()

if args.mode == "oom":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
if args.mode == "crash":
    print("ValueError: something went wrong", file=sys.stderr)
    sys.exit(3)
with joulecast.measure() as run:
    for epoch in range(args.epochs):
        with run.epoch(epoch, samples=10 * args.batch_size):
            time.sleep(args.epoch_s)
            if args.mode == "hang":
                time.sleep(3600)
print(f"trained with seed {args.seed}")
