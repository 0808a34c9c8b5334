"""CPU benchmark: rnnfast cpu vs the NumPy reference vs torch.nn.RNN (CPU), same process and inputs.
Thin wrapper over rnnfast.bench (also reachable as `rnnfast bench`); see --help for options.
Reproduce the README table with: python benchmarks/bench_cpu.py --out docs/bench"""
import sys

from rnnfast.bench import main

if __name__ == "__main__":
    sys.exit(main())
