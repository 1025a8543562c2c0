"""The local-interference test-bed (issue 11) in one namespace, for notebooks and tests
(``from bianet_lib.experiments import testbed as tb``): it defines nothing, it re-exports.

Where each part lives:

* ``experiments.world``: the world, its strength knob and the baseline-only calibration rule;
* ``experiments.preregistration``: the pre-registered comparison families;
* ``experiments.endpoints``: what one run measures (attention mass, clean twins, doses, probes);
* ``experiments.records``: the runs' records and their bit-packed per-trial correctness;
* ``experiments.stats``: hierarchical bootstrap, Holm, the per-arm tables;
* ``reports.testbed``: the markdown tables and sentences made from those numbers.
"""

from bianet_lib.experiments.bits import pack_bits, unpack_bits  # noqa: F401
from bianet_lib.experiments.endpoints import (  # noqa: F401
    N_ATTENTION,
    attention_masses,
    local_labels,
    local_probes,
    run_endpoints,
)
from bianet_lib.experiments.grids import expected_runs, sweep_lines  # noqa: F401
from bianet_lib.experiments.preregistration import (  # noqa: F401
    BIAS_COMPARISONS,
    COMPARISONS,
    ENDPOINTS,
    FIG7_COMPARISONS,
    LATER_FAMILIES,
    SECONDARY_COMPARISONS,
    TABLE6_COMPARISONS,
)
from bianet_lib.experiments.records import (  # noqa: F401
    clusters_for,
    load_records,
    per_trial,
    shared_seeds,
    trial_matrix,
)
from bianet_lib.experiments.stats import (  # noqa: F401
    PROBE_KEYS,
    arm_table,
    attention_table,
    compare_arms,
    endpoint_table,
    hierarchical_bootstrap,
    holm,
    learned,
    long_rows,
    reproduction_rows,
    seed_spread,
    still_rising,
    sweep_means,
)
from bianet_lib.experiments.world import (  # noqa: F401
    CALIBRATED_SCALE,
    CALIBRATED_SCALE_LONG,
    CALIBRATION_SCALES,
    CALIBRATION_SEEDS,
    CALIBRATION_TARGET,
    DIRECTIONS,
    DOSES,
    LABELS,
    TESTBED_GPU_WORLD,
    TESTBED_WORLD,
    TRIAL_SEED,
    TRIALS_PER_ID,
    calibration_rows,
    choose_scale,
    endpoint_trials,
    test_split_at,
)
from bianet_lib.reports.testbed import (  # noqa: F401
    bias_lines,
    calibration_markdown,
    endpoint_markdown,
    family_verdict,
    fig7_lines,
    long_markdown,
    reproduction_lines,
    testbed_markdown,
    verdict_lines,
)
