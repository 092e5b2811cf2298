"""Generation loops, separate from the networks: sampling, the autoregressive step loop, iterative decoding."""
