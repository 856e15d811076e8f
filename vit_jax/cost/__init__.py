"""Cost: FLOPs, MFU and TPUv3-core-days of a run, its estimate beforehand, and benchmarks."""
