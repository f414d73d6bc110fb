"""Records reference values for the engine's schedules and DPM++ 2M from the projects they follow.

Usage (Debian: python3-torch, python3-numpy):

    python3 tools/reference/record_schedule_vectors.py DIFFUSERS_REPO K_DIFFUSION_REPO

where each argument is a checkout (or a `git` directory: the files are read with `git show HEAD:`)
of huggingface/diffusers and crowsonkb/k-diffusion. It writes, beside scheduler-vectors.json:

- tests/fixtures/reference/dpmpp-2m-vectors.json: diffusers' DPMSolverMultistepScheduler run over
  a full loop (set_timesteps, then step() with a deterministic model) under each of the
  scheduler_config.json options the engine reads; timesteps, sigmas and the final sample.
- tests/fixtures/reference/kdiffusion-sigmas.json: k-diffusion's get_sigmas_karras and
  get_sigmas_exponential for SD 1.5's training sigma range.

Only the two source files that hold those functions are loaded; what they import from the rest of
their packages (config plumbing, progress bars, SDE solvers) is replaced by the small stand-ins
below, which the recorded functions do not use.
"""

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "reference"


def read_source(repo: str, path: str) -> tuple[str, str]:
    """The file's text and the commit it came from."""
    root = Path(repo)
    git = ["git", f"--git-dir={root / '.git' if (root / '.git').exists() else root}"]
    commit = subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()
    text = subprocess.check_output([*git, "show", f"HEAD:{path}"], text=True)
    return text, commit


def module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def register_to_config(init):
    """Stand-in for diffusers' decorator: the bound __init__ arguments become `self.config`."""

    def wrapped(self, *args, **kwargs):
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        self.config = types.SimpleNamespace(**values)
        init(self, *args, **kwargs)

    return wrapped


class ConfigMixin:
    def register_to_config(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self.config, key, value)


def load_dpm_solver(repo: str):
    text, commit = read_source(repo, "src/diffusers/schedulers/scheduling_dpmsolver_multistep.py")
    module("diffusers").__path__ = []
    module("diffusers.configuration_utils", ConfigMixin=ConfigMixin, register_to_config=register_to_config)
    module(
        "diffusers.utils",
        deprecate=lambda *a, **k: None,
        is_scipy_available=lambda: False,
    ).__path__ = []
    module("diffusers.utils.torch_utils", randn_tensor=None)
    module("diffusers.schedulers").__path__ = []

    class SchedulerOutput:
        def __init__(self, prev_sample):
            self.prev_sample = prev_sample

    class KarrasDiffusionSchedulers:
        def __iter__(self):
            return iter(())

    module(
        "diffusers.schedulers.scheduling_utils",
        KarrasDiffusionSchedulers=[],
        SchedulerMixin=type("SchedulerMixin", (), {}),
        SchedulerOutput=SchedulerOutput,
    )
    name = "diffusers.schedulers.scheduling_dpmsolver_multistep"
    m = module(name, __package__="diffusers.schedulers")
    exec(compile(text, name, "exec"), m.__dict__)
    return m.DPMSolverMultistepScheduler, commit


def load_kdiffusion_sampling(repo: str):
    text, commit = read_source(repo, "k_diffusion/sampling.py")
    module("k_diffusion").__path__ = []
    module("k_diffusion.utils")
    module("scipy", integrate=None).__path__ = []
    module("torchdiffeq", odeint=None)
    module("torchsde")
    module("tqdm").__path__ = []
    module("tqdm.auto", trange=range, tqdm=None)
    name = "k_diffusion.sampling"
    m = module(name, __package__="k_diffusion")
    exec(compile(text, name, "exec"), m.__dict__)
    return m, commit


# SD 1.5's training schedule (its scheduler_config.json).
SD15 = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def model(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The deterministic "model" of diffusers' own scheduler tests: sample * t / (t + 1)."""
    t = t.to(sample.dtype)
    return sample * t / (t + 1)


def initial_sample() -> torch.Tensor:
    """16 values spread over [-1.2, 1.5], in float32 as a pipeline's latents."""
    return torch.linspace(-1.2, 1.5, 16, dtype=torch.float32)


def dpm_case(Scheduler, steps: int, options: dict) -> dict:
    config = {**SD15, **options}
    scheduler = Scheduler(**config)
    scheduler.set_timesteps(steps)
    sample = initial_sample()
    start = sample.clone()
    for t in scheduler.timesteps:
        sample = scheduler.step(model(sample, t), t, sample).prev_sample
    return {
        "config": config,
        "steps": steps,
        "timesteps": [int(t) for t in scheduler.timesteps],
        "sigmas": [float(s) for s in scheduler.sigmas],
        "initial_sample": [float(v) for v in start],
        "final_sample": [float(v) for v in sample],
    }


def dpm_cases(Scheduler) -> list:
    cases = []
    for spacing, offset in (("linspace", 0), ("leading", 1), ("trailing", 0)):
        base = {"timestep_spacing": spacing, "steps_offset": offset}
        cases.append(dpm_case(Scheduler, 10, base))
    for steps in (10, 20):
        for final in ("zero", "sigma_min"):
            for lower in (True, False):
                for euler in (False, True):
                    options = {
                        "timestep_spacing": "linspace",
                        "final_sigmas_type": final,
                        "lower_order_final": lower,
                        "euler_at_final": euler,
                    }
                    cases.append(dpm_case(Scheduler, steps, options))
    for sigmas in ("use_karras_sigmas", "use_exponential_sigmas"):
        for final in ("zero", "sigma_min"):
            options = {"timestep_spacing": "linspace", sigmas: True, "final_sigmas_type": final}
            cases.append(dpm_case(Scheduler, 12, options))
    cases.append(
        dpm_case(Scheduler, 10, {"timestep_spacing": "leading", "steps_offset": 1, "prediction_type": "v_prediction"})
    )
    # The cosine schedule with diffusers' recommended lambda_min_clipped, which drops timesteps.
    for spacing in ("linspace", "leading", "trailing"):
        options = {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "timestep_spacing": spacing}
        cases.append(dpm_case(Scheduler, 10, options))
    cases.append(
        dpm_case(
            Scheduler,
            15,
            {"timestep_spacing": "trailing", "use_karras_sigmas": True, "prediction_type": "v_prediction"},
        )
    )
    return cases


def training_sigma_range() -> tuple[float, float]:
    """SD 1.5's smallest and largest training sigma, computed in float64."""
    betas = np.linspace(SD15["beta_start"] ** 0.5, SD15["beta_end"] ** 0.5, SD15["num_train_timesteps"]) ** 2
    abar = np.cumprod(1 - betas)
    sigmas = np.sqrt((1 - abar) / abar)
    return float(sigmas[0]), float(sigmas[-1])


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_default_dtype(torch.float64)
    sampling, kd_commit = load_kdiffusion_sampling(sys.argv[2])
    sigma_min, sigma_max = training_sigma_range()
    kd = {
        "note": "k-diffusion get_sigmas_karras / get_sigmas_exponential (torch float64), trailing 0 included.",
        "source": f"crowsonkb/k-diffusion@{kd_commit} k_diffusion/sampling.py",
        "sigma_min": sigma_min,
        "sigma_max": sigma_max,
        "karras": {},
        "exponential": {},
    }
    for n in (1, 2, 5, 10, 25):
        kd["karras"][str(n)] = sampling.get_sigmas_karras(n, sigma_min, sigma_max).tolist()
        kd["exponential"][str(n)] = sampling.get_sigmas_exponential(n, sigma_min, sigma_max).tolist()
    (OUT / "kdiffusion-sigmas.json").write_text(json.dumps(kd, indent=1) + "\n")

    torch.set_default_dtype(torch.float32)
    Scheduler, commit = load_dpm_solver(sys.argv[1])
    dpm = {
        "note": (
            "diffusers DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint), full loop: "
            "set_timesteps(steps), then for each t: sample = step(model(sample, t), t, sample), with "
            "model(sample, t) = sample * t / (t + 1) as in diffusers' scheduler tests. Samples are "
            "variance-preserving (diffusers' own); float32 as diffusers computes them."
        ),
        "source": f"huggingface/diffusers@{commit} src/diffusers/schedulers/scheduling_dpmsolver_multistep.py",
        "cases": dpm_cases(Scheduler),
    }
    (OUT / "dpmpp-2m-vectors.json").write_text(json.dumps(dpm, indent=1) + "\n")
    print(f"wrote {len(dpm['cases'])} DPM++ 2M cases and k-diffusion sigmas to {OUT}")


if __name__ == "__main__":
    main()
