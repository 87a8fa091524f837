"""The diffusion maths (above ``core`` and ``nets``; a network is any ``model(x_t, t) -> eps``).

- ``schedules``: beta schedules and every coefficient derived from them (``NoiseSchedule``);
- ``losses``: the training objective L_simple, and losses per timestep;
- ``samplers``: DDPM, DDIM, DDIM inversion, DPM-Solver++(2M) as pure functions;
- ``generate``: ``SamplerSpec`` (a sampler as one value) and batched, timed generation;
- ``interpolation``: lerp and slerp between latents;
- ``portable_noise``: Gaussian noise drawn identically in Python and in the report's JavaScript.
"""
