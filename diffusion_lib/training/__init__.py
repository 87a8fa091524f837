"""Training (above ``nets``, ``diffusion`` and ``data``).

- ``config``: ``TrainConfig``, the ``train:`` section of a parameter file;
- ``trainer``: ``Trainer``, one guarded optimizer step (AdamW, warm-up, clipping, EMA, bf16);
- ``process``: ``DiffusionProcess``, the assignment's object (schedule + model + trainer);
- ``distributed``: data-parallel training under ``torchrun``;
- ``checkpoint``: atomic checkpoints and resuming from the newest usable one;
- ``log``: ``metrics.csv`` and ``summary.json``;
- ``run``: a training run in phases (prepare, build, restore, loop, finish), and model reuse;
- ``cli``: the program ``python -m diffusion_lib.train``.
"""
