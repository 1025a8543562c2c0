"""bianet_lib: the reference library of the BIANet course.

BIANet is the Bidirectional Intervention Attention Network for voice-face matching
(Wang et al., Pattern Recognition 2025). The notebooks in ``notebooks/`` explain the
paper and call this library; every equation implemented here names its number.

The package map (one line per module; dependencies point down the list: ``model`` and ``data``
know nothing of ``engine``, ``engine`` nothing of ``experiments``, and ``reports`` only reads
numbers the others computed; ``tests/test_layout.py`` checks that no import cycle exists):

``config.py``                     BIANetConfig, the presets, YAML in/out, field validation
``model/affinity.py``             Eq. 9-11: row correlation matrices, the threshold epsilon, the strong/weak split
``model/attention.py``            Eq. 12-19: Positive and Negative Intervention Attention, the mask m
``model/counterfactual.py``       Eq. 20-22: counterfactual logits, the curriculum weight w and its loss
``model/encoders.py``             the face and voice encoders (small CPU trunks, ResNet-18, SE-ResNet-34)
``model/losses.py``               matching, metric, identity and adversarial losses
``model/network.py``              the BIANet module that joins encoders, PIA/NIA, generator and heads
``model/causal.py``               TE, NDE and TIE on a toy structural causal model (notebook 01)
``data/types.py``                 SplitData, the in-memory form every data source produces
``data/sources.py``               load_world(cfg): the world cache, SynthVox or VoxCeleb splits
``data/synthvox.py``              the SynthVox world generator (identities, bias, interference presets)
``data/synthvox_faces.py``        SynthVox faces drawn with PIL, with per-image interference
``data/synthvox_voices.py``       SynthVox voices (source-filter clips), with per-clip interference
``data/interference.py``          where local interference lies: exact masks and the token grid
``data/oracle.py``                the SynthVox ceiling: a matcher that sees the clean parameters
``data/trials.py``                seeded 1:K matching and verification trial lists
``data/sampler.py``               IdentityBatchSampler, Batch and BatchPlan: which samples form a batch
``data/batches.py``               IdentityBatches (in memory or through the loader) and in-batch trials
``data/loader.py``                the DataLoader over a feature store (workers, pinned memory)
``data/store.py``                 the on-disk feature store: files decoded once, read per item
``data/audio.py``                 WAV loading and the log-mel front end
``data/faces.py``                 face image loading and normalisation
``data/errors.py``                the one error type for unusable input files
``data/voxceleb.py``              index a VoxCeleb tree, apply an identity split, load a split
``data/vox_tree.py``              a generated VoxCeleb-shaped tree (benchmarks, the GPU check, certificates)
``engine/trainer.py``             Trainer: the training step, epochs, checkpoints, resume, best.pt
``engine/scoring.py``             scorers: the classifier route C_m and the cosine route
``engine/metrics.py``             1:K accuracy, verification accuracy, ROC-AUC
``engine/protocols.py``           the paper's evaluation protocols on a trained model
``engine/evaluate.py``            results.json: protocols, breakdowns, versions
``engine/diagnostics.py``         is each part alive? mask, threshold, entropy, ablations, probes (numbers)
``engine/artifacts.py``           train-or-load of the course runs the notebooks read
``engine/safeio.py``              atomic writes, checksummed checkpoints, file locks
``engine/provenance.py``          which code made a run: the code hash in every run folder
``engine/equivalence.py``         certificates that changed code computes the committed runs' numbers
``engine/bench.py``               step timing of BIANet against the baseline and the encoders
``engine/gpu_check.py``           the one prepared GPU check and its report
``experiments/grids.py``          the paper's experiments as named grids of runs
``experiments/runner.py``         running a grid: locks, resume, one JSON record per run
``experiments/world.py``          the test-bed's world and its baseline-only calibration rule
``experiments/preregistration.py``  the test-bed's pre-registered comparison families
``experiments/endpoints.py``      what one test-bed run measures: attention mass, clean twins, doses, probes
``experiments/bits.py``           per-trial correctness, bit-packed in the records
``experiments/records.py``        reading a grid's records, their trial matrices and clusters
``experiments/stats.py``          hierarchical bootstrap, Holm, per-arm tables (numbers only)
``experiments/testbed.py``        one namespace re-exporting the test-bed's parts for notebooks
``reports/testbed.py``            the test-bed's markdown tables and verdict sentences, from stats
``reports/diagnostics.py``        ``bianet diagnose``'s text table and the docs' health/results tables
``reports/blocks.py``             regenerating the generated blocks of README.md and docs/
``course.py``                     the course runner: papermill, kernel threads, verify-course
``viz.py``                        the course's figures and their shared style
``cli.py``                        the ``bianet`` command and its sub-command table
``commands/train.py``             ``bianet train``
``commands/evaluate.py``          ``bianet evaluate``
``commands/diagnose.py``          ``bianet diagnose``
``commands/index.py``             ``bianet index``
``commands/synth.py``             ``bianet synth``
``commands/bench.py``             ``bianet bench``
``commands/experiments.py``       ``bianet experiments``
``commands/course.py``            ``bianet course``
``commands/gpu_check.py``         ``bianet gpu-check``
``commands/provenance.py``        ``bianet provenance certify``
"""

__version__ = "0.1.0"
