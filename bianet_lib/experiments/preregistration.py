"""The test-bed's pre-registered comparison families, each written down (and committed) before any
run of its grid: the arms compared, the endpoints, and which family is Holm-corrected with which.
``tests/test_testbed.py`` reads the commit history to check that each family precedes its runs.
"""

from __future__ import annotations

# --- the grid's analysis ------------------------------------------------------------------------
#: The pre-registered comparisons (arm, reference) and endpoints, tested together under Holm.
COMPARISONS = (("pia", "baseline"), ("nia", "baseline"), ("bianet", "baseline"), ("control", "baseline"),
               ("bianet", "control"))


ENDPOINTS = ("accuracy", "clean_twin_drop")


#: The second family, pre-registered with its grid (experiments.TESTBED_SECONDARY) before any of its
#: runs: the peer against the baseline (Table 1) and BIANet against BIANet without the curriculum
#: (Table 7), Holm-corrected on their own (8 tests): they ask other questions than the first family.
SECONDARY_COMPARISONS = (("peer", "baseline"), ("bianet", "curriculum_constant"))


#: The third family, pre-registered with the converged grid's second part (experiments.TABLE6_VARIANTS)
#: before any of its runs: Table 6, BIANet with the threshold epsilon fixed at the paper's values
#: against the learned one, Holm-corrected on its own (12 tests).
TABLE6_COMPARISONS = (("epsilon_0.01", "bianet"), ("epsilon_0.1", "bianet"), ("epsilon_0.2", "bianet"))


#: The fourth family, pre-registered with the converged grid's third part (experiments.FIG7_VARIANTS,
#: grid ``testbed-16-rest``) before any of its runs: Fig. 7, BIANet at each other temperature tau_1
#: (PIA, Eq. 12, default 5) and tau_2 (Eq. 19, default 10) against the default BIANet, Holm-corrected on
#: its own (8 comparisons x 2 endpoints x 2 directions = 32 tests).
FIG7_COMPARISONS = tuple((f"{which}_{tau:g}", "bianet") for which, default in (("tau1", 5.0), ("tau2", 10.0))
                         for tau in (0.5, 1.0, 5.0, 10.0, 20.0) if tau != default)


#: The fifth family, pre-registered with the same grid: the train-only shortcut rho (the course's
#: bias study; the test split is the same at every rho, so runs pair trial by trial): does the
#: shortcut cost the baseline, does BIANet (or one of its parts, or its curriculum) lose less to it
#: than the baseline trained on the same shortcut (6 comparisons x 2 x 2 = 24 tests).
BIAS_COMPARISONS = (("baseline_rho0.9", "baseline"), ("bianet_rho0.5", "baseline_rho0.5"),
                    ("bianet_rho0.9", "baseline_rho0.9"), ("pia_rho0.9", "baseline_rho0.9"),
                    ("nia_rho0.9", "baseline_rho0.9"), ("bianet_rho0.9", "curriculum_constant_rho0.9"))


#: Every family after the first, as the README's tables title them.
LATER_FAMILIES = (("Second pre-registered family (the peer, Table 1; the curriculum, Table 7)", SECONDARY_COMPARISONS),
                  ("Third pre-registered family (Table 6: the threshold epsilon fixed at the paper's values "
                   "against the learned one)", TABLE6_COMPARISONS),
                  ("Fourth pre-registered family (Fig. 7: the temperatures tau_1 and tau_2 against the defaults)",
                   FIG7_COMPARISONS),
                  ("Fifth pre-registered family (the bias study: a train-only shortcut at rho 0.5 and 0.9)",
                   BIAS_COMPARISONS))


#: The fair test-bed's family (issue 25; grid ``fair``), Holm-corrected on its own over
#: comparisons x ENDPOINTS x directions (5 x 2 x 2 = 20 tests); pre-registered before any run.
FAIR_COMPARISONS = (("oracle", "baseline"), ("bianet", "baseline"), ("supervised", "baseline"),
                    ("supervised", "bianet"), ("bianet", "control"))

#: The endpoint that decides the fair family's outcome: a comparison (a, b) "improves" when its
#: clean-twin drop difference a - b is below 0 and Holm-significant in both directions.
FAIR_DECISION_ENDPOINT = "clean_twin_drop"

#: The three pre-declared outcomes of the fair family: the comparisons that must improve and those
#: that must not; any other pattern is "other" (stats.fair_outcome).
FAIR_OUTCOMES = {
    "no_headroom": {"improves": (), "not": (("oracle", "baseline"),)},
    "bianet_takes_headroom": {"improves": (("oracle", "baseline"), ("bianet", "baseline"), ("bianet", "control")),
                              "not": ()},
    "only_supervised_takes_headroom": {"improves": (("oracle", "baseline"), ("supervised", "baseline")),
                                       "not": (("bianet", "baseline"),)},
}


#: The fair test-bed's exploratory family (world.FAIR_EXPLORATORY_WORLD; declared after the
#: headroom check's no_headroom, before any of its runs): the method arms against the baseline and
#: each other, Holm over comparisons x ENDPOINTS x directions (4 x 2 x 2 = 16 tests), reported apart
#: from the confirmatory check and called exploratory wherever shown.
FAIR_EXPLORATORY_COMPARISONS = (("bianet", "baseline"), ("supervised", "baseline"), ("supervised", "bianet"),
                                ("bianet", "control"))

#: Its reading, decided in F-V, the one direction where the oracle beat the baseline: a comparison
#: "takes headroom" when its clean-twin drop difference is below 0 and Holm-significant in F-V (V-F
#: is reported, not read: there is no headroom there to take). Any other pattern is "other".
FAIR_EXPLORATORY_DIRECTION = "fv"
FAIR_EXPLORATORY_READINGS = {
    "none_takes_headroom": {"improves": (), "not": (("bianet", "baseline"), ("supervised", "baseline"))},
    "bianet_takes_headroom": {"improves": (("bianet", "baseline"), ("bianet", "control")), "not": ()},
    "only_supervised_takes_headroom": {"improves": (("supervised", "baseline"),), "not": (("bianet", "baseline"),)},
}

#: NIA's anti-identity (issue 25: does the supervised arm change it?): supervised - BIANet in the
#: 1:2 accuracy of -z_neg alone (endpoints.branch_accuracies, per trial), per direction, with the
#: hierarchical bootstrap over test identities and seeds, Holm over the 2 directions. "Changes"
#: when both directions are Holm-significant, "unchanged" when neither is, else "mixed".
FAIR_BRANCH_COMPARISON = ("supervised", "bianet", "minus_z_neg")
