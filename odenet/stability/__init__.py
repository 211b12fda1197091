"""The stability analyzer: one linearization, read as error growth and as gradient flow.

Public API
----------
- Schemes (from the tableau): [`stability_function`][odenet.stability.stability_function],
  [`stability_polynomials`][odenet.stability.stability_polynomials],
  [`real_stability_interval`][odenet.stability.real_stability_interval],
  [`imaginary_stability_interval`][odenet.stability.imaginary_stability_interval],
  [`is_a_stable`][odenet.stability.is_a_stable], [`is_l_stable`][odenet.stability.is_l_stable],
  [`r_infinity`][odenet.stability.r_infinity],
  [`stability_region`][odenet.stability.stability_region],
  [`empirical_stability_function`][odenet.stability.empirical_stability_function].
- Step maps: [`flow_map`][odenet.stability.flow_map], [`jacobian`][odenet.stability.jacobian],
  [`jacobians`][odenet.stability.jacobians],
  [`step_jacobians`][odenet.stability.step_jacobians],
  [`tangent_step`][odenet.stability.tangent_step],
  [`cotangent_step`][odenet.stability.cotangent_step],
  [`trajectory`][odenet.stability.trajectory].
- Products of Jacobians: [`analyze`][odenet.stability.analyze],
  [`PropagationReport`][odenet.stability.PropagationReport],
  [`kreiss_constant`][odenet.stability.kreiss_constant].
- Chaos: [`lyapunov_spectrum`][odenet.stability.lyapunov_spectrum],
  [`lyapunov`][odenet.stability.lyapunov.lyapunov],
  [`LyapunovResult`][odenet.stability.LyapunovResult],
  [`kaplan_yorke_dimension`][odenet.stability.kaplan_yorke_dimension].
- Translation-invariant steps: [`von_neumann`][odenet.stability.von_neumann.von_neumann],
  [`VonNeumannResult`][odenet.stability.VonNeumannResult],
  [`cfl_search`][odenet.stability.cfl_search].
- Error ↔ gradient duality: [`propagate_errors`][odenet.stability.propagate_errors],
  [`backpropagate`][odenet.stability.backpropagate],
  [`global_error_prediction`][odenet.stability.global_error_prediction].
- Conditioning of a solve (is the answer determined at this tolerance?):
  [`conditioning`][odenet.stability.conditioning],
  [`ConditioningReport`][odenet.stability.ConditioningReport].
- Fixed points: [`fixed_point_stability`][odenet.stability.fixed_point_stability],
  [`find_fixed_point`][odenet.stability.find_fixed_point],
  [`gershgorin_discs`][odenet.stability.gershgorin_discs].
- Initialization: [`variance_map`][odenet.stability.variance_map],
  [`mean_field`][odenet.stability.mean_field],
  [`measured_gradient_ratios`][odenet.stability.measured_gradient_ratios].
"""

from odenet.stability._errors import NotTranslationInvariantError, StabilityInputError
from odenet.stability.amplification import ConditioningReport, conditioning
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
    "ConditioningReport",
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
    "conditioning",
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
