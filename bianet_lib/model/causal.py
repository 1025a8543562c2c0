r"""Counterfactual vocabulary of BIANet's section 3 (Eq. 1-4 and 8) on a tiny structural causal model.

The causal graph of the paper's Fig. 2(a) has a treatment ``X``, a mediator ``A`` and an outcome
``Y`` with edges ``X -> A -> Y`` and ``X -> Y``. A structural causal model (SCM) gives each
variable a function of its parents and of its own exogenous noise::

    A = f_A(X, U_A)
    Y = f_Y(X, A, U_Y)

An *intervention* ``do(X = x)`` replaces X's mechanism by the constant ``x``; ``do(X = x, A = a)``
also overrides A's. With the noise ``U = (U_A, U_Y)`` of one unit held fixed:

* ``Y_{x,a}``            -- Eq. (1): Y with X set to x and A set to a;
* ``A_x``                -- A's value when X is set to x;
* ``Y_{x, A_{x*}}``      -- the counterfactual: X set to x but A held at the value it takes
  when X = x* (the mediator "does not see" the treatment);
* ``TE  = Y_{x,A_x}     - Y_{x*,A_{x*}}``  -- Eq. (2), total effect;
* ``NDE = Y_{x,A_{x*}}  - Y_{x*,A_{x*}}``  -- Eq. (3), natural direct effect;
* ``TIE = Y_{x,A_x}     - Y_{x,A_{x*}}``   -- Eq. (4) = Eq. (8), total indirect effect.

Effects are unit-level differences averaged over the exogenous noise (Monte-Carlo with common
random numbers; exact when the noise scales are zero, since then one unit is every unit). The
three averages are computed from the same three potential outcomes, so ``TE = NDE + TIE`` holds
up to floating-point rounding, as Eq. (4) says it must.

In BIANet, X is the encoder feature map, A its affinity (correlation) matrix, and the intervened
mediator ``A*`` is the weak-correlation part of A that feeds the Negative Intervention Attention
(NIA); the prediction made from it is subtracted from the positive prediction (Eq. 8, Eq. 22).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Array = np.ndarray

__all__ = [
    "Effects",
    "LinearSCM",
    "MediationSCM",
    "Noise",
    "effects",
    "natural_direct_effect",
    "total_effect",
    "total_indirect_effect",
]


@dataclass(frozen=True)
class Noise:
    """Exogenous noise of ``n`` units: ``u_a`` feeds A's mechanism, ``u_y`` feeds Y's."""

    u_a: Array
    u_y: Array


@dataclass(frozen=True)
class Effects:
    """TE (Eq. 2), NDE (Eq. 3) and TIE (Eq. 4/8) of changing X from ``x_star`` to ``x``."""

    x: float
    x_star: float
    te: float
    nde: float
    tie: float


@dataclass(frozen=True)
class MediationSCM:
    """SCM ``A = f_a(X, U_A)``, ``Y = f_y(X, A, U_Y)`` with Gaussian exogenous noise.

    ``f_a(x, u_a)`` and ``f_y(x, a, u_y)`` must accept numpy arrays (broadcasting). With
    ``noise_a == noise_y == 0`` the model is deterministic and every effect is exact.
    """

    f_a: Callable[[Array, Array], Array]
    f_y: Callable[[Array, Array, Array], Array]
    noise_a: float = 0.0
    noise_y: float = 0.0

    @property
    def deterministic(self) -> bool:
        return self.noise_a == 0.0 and self.noise_y == 0.0

    def sample_noise(self, n: int = 20_000, seed: int = 0) -> Noise:
        """Draw the exogenous noise of ``n`` units (a single unit of zeros if deterministic)."""
        if self.deterministic:
            return Noise(np.zeros(1), np.zeros(1))
        rng = np.random.default_rng(seed)
        return Noise(self.noise_a * rng.standard_normal(n), self.noise_y * rng.standard_normal(n))

    def A_x(self, x: float, noise: Noise) -> Array:
        """``A_x``: the mediator's value, per unit, under ``do(X = x)``."""
        return np.asarray(self.f_a(np.full_like(noise.u_a, x, dtype=float), noise.u_a), dtype=float)

    def Y_xa(self, x: float, a: float | Array, noise: Noise) -> Array:
        """``Y_{x,a}`` of Eq. (1): the outcome, per unit, under ``do(X = x, A = a)``.

        ``a`` may be a number or a per-unit array such as ``A_x(x_star)`` (which gives
        the nested counterfactual ``Y_{x, A_{x*}}``).
        """
        xs = np.full_like(noise.u_y, x, dtype=float)
        a = np.broadcast_to(np.asarray(a, dtype=float), xs.shape)
        return np.asarray(self.f_y(xs, a, noise.u_y), dtype=float)

    def do(self, x: float, a: float | Array | None = None, noise: Noise | None = None) -> tuple[Array, Array]:
        """Run the SCM under ``do(X = x)`` (and ``do(A = a)`` if given); returns per-unit ``(A, Y)``."""
        noise = self.sample_noise() if noise is None else noise
        a_val = self.A_x(x, noise) if a is None else np.broadcast_to(np.asarray(a, dtype=float), noise.u_a.shape)
        return a_val, self.Y_xa(x, a_val, noise)

    def potential_outcomes(self, x: float, x_star: float, noise: Noise) -> dict[str, Array]:
        """The three potential outcomes that Eq. (2)-(4) combine, per unit."""
        a_x, a_xs = self.A_x(x, noise), self.A_x(x_star, noise)
        return {
            "Y_x_Ax": self.Y_xa(x, a_x, noise),
            "Y_x_Axs": self.Y_xa(x, a_xs, noise),
            "Y_xs_Axs": self.Y_xa(x_star, a_xs, noise),
        }


def _outcomes(scm: MediationSCM, x: float, x_star: float, n: int, seed: int) -> dict[str, Array]:
    return scm.potential_outcomes(x, x_star, scm.sample_noise(n, seed))


def total_effect(scm: MediationSCM, x: float, x_star: float, n: int = 20_000, seed: int = 0) -> float:
    """TE of Eq. (2): ``E[Y_{x,A_x} - Y_{x*,A_{x*}}]``."""
    po = _outcomes(scm, x, x_star, n, seed)
    return float(np.mean(po["Y_x_Ax"] - po["Y_xs_Axs"]))


def natural_direct_effect(scm: MediationSCM, x: float, x_star: float, n: int = 20_000, seed: int = 0) -> float:
    """NDE of Eq. (3): ``E[Y_{x,A_{x*}} - Y_{x*,A_{x*}}]`` (mediator held at its x* value)."""
    po = _outcomes(scm, x, x_star, n, seed)
    return float(np.mean(po["Y_x_Axs"] - po["Y_xs_Axs"]))


def total_indirect_effect(scm: MediationSCM, x: float, x_star: float, n: int = 20_000, seed: int = 0) -> float:
    """TIE of Eq. (4) / Eq. (8): ``E[Y_{x,A_x} - Y_{x,A_{x*}}]`` (X fixed, only A moves)."""
    po = _outcomes(scm, x, x_star, n, seed)
    return float(np.mean(po["Y_x_Ax"] - po["Y_x_Axs"]))


def effects(scm: MediationSCM, x: float, x_star: float, n: int = 20_000, seed: int = 0) -> Effects:
    """TE, NDE and TIE from one draw of the noise (so ``TE = NDE + TIE`` up to rounding)."""
    po = _outcomes(scm, x, x_star, n, seed)
    y1, y2, y3 = (float(np.mean(po[k])) for k in ("Y_x_Ax", "Y_x_Axs", "Y_xs_Axs"))
    return Effects(x=float(x), x_star=float(x_star), te=y1 - y3, nde=y2 - y3, tie=y1 - y2)


@dataclass(frozen=True)
class LinearSCM(MediationSCM):
    """``A = c_a + alpha X + U_A``;  ``Y = c_y + gamma X + beta A + theta X A + U_Y``.

    ``theta = 0`` is the linear case of the mediation literature: TE = (gamma + alpha beta)(x - x*),
    NDE = gamma (x - x*), TIE = alpha beta (x - x*), the same at every reference level x*.
    ``theta != 0`` adds an X-A interaction, the simplest non-linearity: then the NDE depends on
    the reference level x* (through ``A_{x*}``) and the TIE on x.
    """

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    theta: float = 0.0
    c_a: float = 0.0
    c_y: float = 0.0
    f_a: Callable = field(init=False, repr=False, default=None)  # type: ignore[assignment]
    f_y: Callable = field(init=False, repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        alpha, beta, gamma, theta, c_a, c_y = (
            self.alpha, self.beta, self.gamma, self.theta, self.c_a, self.c_y
        )
        object.__setattr__(self, "f_a", lambda x, u: c_a + alpha * x + u)
        object.__setattr__(self, "f_y", lambda x, a, u: c_y + gamma * x + beta * a + theta * x * a + u)

    def closed_form_effects(self, x: float, x_star: float) -> Effects:
        """Exact TE/NDE/TIE from the coefficients (E[U] = 0), no intervention run needed.

        With ``m(x') = E[A_{x'}] = c_a + alpha x'`` and ``E[Y_{x,A_{x'}}] = c_y + gamma x +
        (beta + theta x) m(x')``, Eq. (2)-(4) give the expressions below.
        """
        dx = x - x_star
        m_x, m_xs = self.c_a + self.alpha * x, self.c_a + self.alpha * x_star
        nde = (self.gamma + self.theta * m_xs) * dx
        tie = (self.beta + self.theta * x) * (m_x - m_xs)
        return Effects(x=float(x), x_star=float(x_star), te=nde + tie, nde=nde, tie=tie)
