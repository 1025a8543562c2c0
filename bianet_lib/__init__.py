"""bianet_lib: the reference library of the BIANet course.

BIANet is the Bidirectional Intervention Attention Network for voice-face matching
(Wang et al., Pattern Recognition 2025). The notebooks in ``notebooks/`` explain the
paper and call this library; every equation implemented here names its number.

Five packages, dependencies pointing down the list: ``model/`` (the paper's equations), ``data/``
(SynthVox, VoxCeleb, batches and trials), ``engine/`` (training, evaluation, the files a run
writes), ``experiments/`` (the grids and the test-bed) and ``reports/`` (text written from their
numbers); beside them ``config.py``, ``course.py``, ``viz.py``, ``cli.py`` and ``commands/``.
``docs/library.md`` maps every module, one line each (a test keeps it equal to the files), and
``tests/test_layout.py`` checks that no import cycle exists.
"""

__version__ = "0.1.0"
