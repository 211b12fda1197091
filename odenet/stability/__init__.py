"""The stability analyzer: one linearization, read as error growth and as gradient flow.

Public API
----------
Schemes (from the tableau): :func:`stability_function`, :func:`stability_polynomials`,
:func:`real_stability_interval`, :func:`imaginary_stability_interval`,
:func:`is_a_stable`, :func:`is_l_stable`, :func:`r_infinity`,
:func:`stability_region`, :func:`empirical_stability_function`.

Step maps: :func:`flow_map`, :func:`jacobian`, :func:`jacobians`,
:func:`step_jacobians`, :func:`tangent_step`, :func:`cotangent_step`,
:func:`trajectory`.

Products of Jacobians: :func:`analyze` (-> :class:`PropagationReport`),
:func:`kreiss_constant`.

Chaos: :func:`lyapunov_spectrum`, :func:`lyapunov` (-> :class:`LyapunovResult`),
:func:`kaplan_yorke_dimension`.

Translation-invariant steps: :func:`von_neumann` (-> :class:`VonNeumannResult`),
:func:`cfl_search`.

Error ↔ gradient duality: :func:`propagate_errors`, :func:`backpropagate`,
:func:`global_error_prediction`.

Fixed points: :func:`fixed_point_stability`, :func:`find_fixed_point`,
:func:`gershgorin_discs`.

Initialization: :func:`variance_map`, :func:`mean_field`, :func:`measured_gradient_ratios`.
"""

from odenet.stability._errors import NotTranslationInvariantError, StabilityInputError
from odenet.stability.duality import (
    GlobalErrorPrediction,
    backpropagate,
    global_error_prediction,
    propagate_errors,
)
from odenet.stability.fixed_points import (
    FixedPointStability,
    find_fixed_point,
    fixed_point_stability,
    gershgorin_discs,
)
from odenet.stability.linearize import (
    cotangent_step,
    flow_map,
    jacobian,
    jacobians,
    step_jacobians,
    tangent_step,
    trajectory,
)
from odenet.stability.lyapunov import (
    LyapunovResult,
    kaplan_yorke_dimension,
    lyapunov,
    lyapunov_spectrum,
)
from odenet.stability.meanfield import MeanField, mean_field, measured_gradient_ratios, variance_map
from odenet.stability.propagation import PropagationReport, analyze, kreiss_constant
from odenet.stability.regions import (
    StabilityRegion,
    empirical_stability_function,
    imaginary_stability_interval,
    is_a_stable,
    is_l_stable,
    r_infinity,
    real_stability_interval,
    stability_function,
    stability_polynomials,
    stability_region,
)
from odenet.stability.von_neumann import VonNeumannResult, cfl_search, von_neumann

__all__ = [
    "FixedPointStability",
    "GlobalErrorPrediction",
    "LyapunovResult",
    "MeanField",
    "NotTranslationInvariantError",
    "PropagationReport",
    "StabilityInputError",
    "StabilityRegion",
    "VonNeumannResult",
    "analyze",
    "backpropagate",
    "cfl_search",
    "cotangent_step",
    "empirical_stability_function",
    "find_fixed_point",
    "fixed_point_stability",
    "flow_map",
    "gershgorin_discs",
    "global_error_prediction",
    "imaginary_stability_interval",
    "is_a_stable",
    "is_l_stable",
    "jacobian",
    "jacobians",
    "kaplan_yorke_dimension",
    "kreiss_constant",
    "lyapunov",
    "lyapunov_spectrum",
    "mean_field",
    "measured_gradient_ratios",
    "propagate_errors",
    "r_infinity",
    "real_stability_interval",
    "stability_function",
    "stability_polynomials",
    "stability_region",
    "step_jacobians",
    "tangent_step",
    "trajectory",
    "variance_map",
    "von_neumann",
]
