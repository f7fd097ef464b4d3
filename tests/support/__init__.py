"""What the tests and the benchmarks share: clusters, operators, experiments, faults and planner rounds."""
