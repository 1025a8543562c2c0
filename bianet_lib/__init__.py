"""bianet_lib: the reference library of the BIANet course.

BIANet is the Bidirectional Intervention Attention Network for voice-face matching
(Wang et al., Pattern Recognition 2025). The notebooks in ``notebooks/`` explain the
paper and call this library; every equation implemented here names its number.
"""

__version__ = "0.1.0"
