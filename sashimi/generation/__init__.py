"""Generation loops, separate from the networks: sampling, the autoregressive step loop, iterative decoding."""

from sashimi.generation.hybrid import generate_hybrid as generate_hybrid
from sashimi.generation.masked import masked_decode as masked_decode
from sashimi.generation.masked import sample_top_p as sample_top_p
