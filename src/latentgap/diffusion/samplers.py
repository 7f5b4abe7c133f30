"""diffusers schedulers for the generator's (and, later, the segmenter's) sampling loops, by objective."""

from __future__ import annotations

from ..errors import UserError

SAMPLERS = {"flow": ("euler",), "vpred": ("ddim", "dpm++")}


def make_scheduler(objective: str, sampler: str = "auto"):
    """``(scheduler, name)``: Euler (``FlowMatchEulerDiscreteScheduler``) for flow matching; DDIM (eta 0) or
    DPM-Solver++ 2M for v-prediction on the shared scaled-linear schedule; "auto" picks the first."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if sampler == "auto":
        sampler = SAMPLERS[objective][0]
    if sampler not in SAMPLERS[objective]:
        raise UserError(f"sampler '{sampler}' does not fit a {objective} generator",
                        f"use one of: {', '.join(SAMPLERS[objective])}")
    if sampler == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0), sampler
    common = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type="v_prediction", timestep_spacing="trailing")
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False), sampler
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2), sampler
