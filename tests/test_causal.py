"""Eq. (1)-(4), (8) on the structural causal model of bianet_lib.model.causal."""

from __future__ import annotations

import numpy as np
import pytest

from bianet_lib.model.causal import (
    LinearSCM,
    MediationSCM,
    effects,
    natural_direct_effect,
    total_effect,
    total_indirect_effect,
)


def test_hand_computed_tiny_example():
    # A = 2X; Y = X + 3A.  A_1 = 2, A_0 = 0; Y_{1,A_1} = 7, Y_{1,A_0} = 1, Y_{0,A_0} = 0.
    scm = LinearSCM(alpha=2, beta=3, gamma=1)
    noise = scm.sample_noise()
    assert scm.A_x(1.0, noise).tolist() == [2.0]
    assert scm.Y_xa(1.0, 5.0, noise).tolist() == [16.0]  # Eq. (1): Y_{1,5} = 1 + 15
    assert total_effect(scm, 1, 0) == 7.0
    assert natural_direct_effect(scm, 1, 0) == 1.0
    assert total_indirect_effect(scm, 1, 0) == 6.0


def test_hand_computed_interaction_example():
    # Y = X + 3A + XA with A = 2X: Y_{1,A_1} = 1 + 6 + 2 = 9, Y_{1,A_0} = 1, Y_{0,A_0} = 0.
    e = effects(LinearSCM(alpha=2, beta=3, gamma=1, theta=1), 1, 0)
    assert (e.te, e.nde, e.tie) == (9.0, 1.0, 8.0)


@pytest.mark.parametrize("theta", [0.0, 0.5, -1.5])
@pytest.mark.parametrize("x,x_star", [(1.0, 0.0), (2.0, -1.0), (-0.5, 3.0)])
def test_te_equals_nde_plus_tie(theta, x, x_star):
    for scm in (
        LinearSCM(alpha=1.3, beta=-0.7, gamma=0.4, theta=theta, c_a=0.2, c_y=-1.0),
        LinearSCM(alpha=1.3, beta=-0.7, gamma=0.4, theta=theta, noise_a=0.5, noise_y=2.0),
    ):
        e = effects(scm, x, x_star, n=2000, seed=3)
        assert e.te == pytest.approx(e.nde + e.tie, abs=1e-12)
        # the separate functions give the same numbers as the joint computation
        assert total_effect(scm, x, x_star, n=2000, seed=3) == pytest.approx(e.te, abs=1e-9)
        assert natural_direct_effect(scm, x, x_star, n=2000, seed=3) == pytest.approx(e.nde, abs=1e-9)
        assert total_indirect_effect(scm, x, x_star, n=2000, seed=3) == pytest.approx(e.tie, abs=1e-9)


@pytest.mark.parametrize("x,x_star", [(1.0, 0.0), (3.0, 1.0), (-2.0, 0.5)])
def test_linear_closed_form_matches_intervention(x, x_star):
    scm = LinearSCM(alpha=0.8, beta=2.5, gamma=-0.6, c_a=1.0, c_y=0.3)
    cf, iv = scm.closed_form_effects(x, x_star), effects(scm, x, x_star)
    assert iv.te == pytest.approx(cf.te) and iv.nde == pytest.approx(cf.nde) and iv.tie == pytest.approx(cf.tie)
    assert cf.nde == pytest.approx(-0.6 * (x - x_star))
    assert cf.tie == pytest.approx(0.8 * 2.5 * (x - x_star))


def test_closed_form_matches_monte_carlo_with_noise():
    scm = LinearSCM(alpha=1.0, beta=2.0, gamma=0.5, theta=0.7, noise_a=1.0, noise_y=1.0)
    cf, mc = scm.closed_form_effects(2.0, 1.0), effects(scm, 2.0, 1.0, n=50_000, seed=0)
    # U_A enters the NDE through theta * (x - x*) * U_A: standard error 0.7/sqrt(5e4) ~ 0.003
    assert mc.nde == pytest.approx(cf.nde, abs=0.02)
    assert mc.tie == pytest.approx(cf.tie, abs=1e-9)  # U_A cancels in Y_{x,A_x} - Y_{x,A_x*}
    assert mc.te == pytest.approx(cf.te, abs=0.02)


def test_linear_nde_does_not_depend_on_reference_but_nonlinear_does():
    lin = LinearSCM(alpha=2, beta=3, gamma=1)
    assert effects(lin, 1, 0).nde == effects(lin, 2, 1).nde == 1.0
    inter = LinearSCM(alpha=2, beta=3, gamma=1, theta=1)
    assert effects(inter, 1, 0).nde == 1.0  # gamma + theta * A_0 = 1 + 0
    assert effects(inter, 2, 1).nde == 3.0  # gamma + theta * A_1 = 1 + 2
    # a saturating mediator (generic SCM), Y = X*A: NDE of a unit step = A_{x*} = tanh(x*)
    sat = MediationSCM(f_a=lambda x, u: np.tanh(x) + u, f_y=lambda x, a, u: x * a + u)
    n0, n1 = effects(sat, 1, 0), effects(sat, 2, 1)
    assert n0.nde == pytest.approx(np.tanh(0.0)) and n1.nde == pytest.approx(np.tanh(1.0))
    assert n0.nde != pytest.approx(n1.nde)


def test_do_overrides_mediator_and_keeps_noise():
    scm = LinearSCM(alpha=1, beta=1, gamma=0, noise_a=1.0, noise_y=0.0)
    noise = scm.sample_noise(n=5, seed=1)
    a, y = scm.do(2.0, noise=noise)
    np.testing.assert_allclose(a, 2.0 + noise.u_a)
    np.testing.assert_allclose(y, a)
    a2, y2 = scm.do(2.0, a=-1.0, noise=noise)
    np.testing.assert_allclose(a2, -1.0)
    np.testing.assert_allclose(y2, -1.0)
