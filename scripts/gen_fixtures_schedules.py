#!/usr/bin/env python3
"""Fixtures for mumu's noise schedules (Sources/MumuSampler/Sampling/NoiseSchedule.swift).

Writes Tests/MumuSamplerTests/Fixtures/schedules.json: for SDXL's EulerDiscreteScheduler settings
(scaled_linear betas 0.00085..0.012, 1000 training steps, steps_offset 1) and each case
(spacing leading | trailing | linspace, Karras sigmas or not, steps), what diffusers' set_timesteps gives:
`timesteps`, `sigmas` (with the final 0) and `init_noise_sigma`; plus the 1000 training sigmas.
`dpm_cases`: DPMSolverMultistepScheduler (dpmsolver++, order 2, final sigma 0) with the same settings: its own
spacing rules (leading and linspace over steps + 1 points) and full-range Karras sigmas with rounded timesteps.
`ddim_cases`: DDIMScheduler (set_alpha_to_one False, as SDXL's config): the timesteps and, per step, the sigma of
alpha_prod_t and of alpha_prod_t_prev (t - 1000 // steps, or alphas_cumprod[0] past the start).
Run: python3 scripts/gen_fixtures_schedules.py   (diffusers 0.42, torch 2.x, CPU)
"""
import json
import os

import diffusers
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

BASE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            steps_offset=1, prediction_type="epsilon", interpolation_type="linear")
cases = []
for spacing in ["leading", "trailing", "linspace"]:
    for karras in [False, True]:
        for steps in [1, 4, 20, 30, 50]:
            s = EulerDiscreteScheduler(**BASE, timestep_spacing=spacing, use_karras_sigmas=karras)
            s.set_timesteps(steps)
            cases.append({"spacing": spacing, "karras": karras, "steps": steps,
                          "timesteps": [float(t) for t in s.timesteps], "sigmas": [float(x) for x in s.sigmas],
                          "init_noise_sigma": float(s.init_noise_sigma)})
dpm_cases, ddim_cases = [], []
VP = {k: v for k, v in BASE.items() if k != "interpolation_type"}
for spacing in ["leading", "trailing", "linspace"]:
    for steps in [1, 4, 20, 30, 50]:
        for karras in [False, True]:
            s = DPMSolverMultistepScheduler(**VP, timestep_spacing=spacing, use_karras_sigmas=karras,
                                            algorithm_type="dpmsolver++", solver_order=2)
            s.set_timesteps(steps)
            dpm_cases.append({"spacing": spacing, "karras": karras, "steps": steps,
                              "timesteps": [float(t) for t in s.timesteps], "sigmas": [float(x) for x in s.sigmas],
                              "init_noise_sigma": float(s.init_noise_sigma)})
        s = DDIMScheduler(**VP, timestep_spacing=spacing, set_alpha_to_one=False, clip_sample=False)
        s.set_timesteps(steps)
        sig = lambda a: float(((1 - a) / a) ** 0.5)  # noqa: E731
        prev = [int(t) - 1000 // steps for t in s.timesteps]
        ddim_cases.append({"spacing": spacing, "steps": steps, "timesteps": [float(t) for t in s.timesteps],
                           "sigmas": [sig(s.alphas_cumprod[int(t)]) for t in s.timesteps],
                           "next_sigmas": [sig(s.alphas_cumprod[p] if p >= 0 else s.final_alpha_cumprod) for p in prev],
                           "init_noise_sigma": float(s.init_noise_sigma)})
train = EulerDiscreteScheduler(**BASE)
train_sigmas = (((1 - train.alphas_cumprod) / train.alphas_cumprod) ** 0.5).tolist()
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "MumuSamplerTests", "Fixtures", "schedules.json")
with open(path, "w") as f:
    json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "train_sigmas": train_sigmas, "cases": cases,
               "dpm_cases": dpm_cases, "ddim_cases": ddim_cases}, f)
print("wrote", os.path.normpath(path), len(cases), "cases")
