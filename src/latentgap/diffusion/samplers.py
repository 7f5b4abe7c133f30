"""diffusers schedulers for the generator's (and, later, the segmenter's) sampling loops, by objective."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    import torch

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


def denoise(objective: str, z: "torch.Tensor", predict, *, steps: int, sampler: str = "auto") -> "torch.Tensor":
    """Run a diffusers sampler from pure noise ``z`` (unit Gaussian): ``predict(z_t, model_time)`` returns the
    model's prediction (velocity for flow, v for vpred) for a batch whose network time is ``model_time`` (B,).

    One step is the single-step mode: for v-prediction with trailing spacing it returns the model's x0 estimate
    at the last timestep; for flow matching z - v at t = 1.
    """
    sched, name = make_scheduler(objective, sampler)
    sched.set_timesteps(steps, device=z.device)
    if name != "euler":
        z = z * sched.init_noise_sigma
    for t in sched.timesteps:
        pred = predict(z, t.expand(len(z)).to(z.device).float())
        z = sched.step(pred, t, z).prev_sample
    return z
