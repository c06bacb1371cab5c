"""Developer tooling the Lambda image does not copy: CLI, demo, local server, synth, benchmarks."""
