"""The networks (PyTorch only): ``model(x_t, t) -> eps``; none of them knows the noise schedule.

- ``blocks``: time features, the two residual blocks, attention, resampling;
- ``fast``: the concatenating block computed with less work (what training and sampling run);
- ``unet``: the body both U-Nets share, and the geometry rule (how often a size halves);
- ``concat_unet``: ``DiffusionModel``, MNIST, one time embedding concatenated (the assignment's rule);
- ``additive_unet``: ``ColorUNet``, CIFAR-10, a time MLP added in every block (Ho et al.);
- ``registry``: which class a stored config builds; model files; fingerprints;
- ``summary``: a network described block by block;
- ``inference``: the sampling backends (eager, bf16, compiled bf16, frozen bf16, ONNX Runtime) behind
  ``model(x_t, t)``;
- ``onnx``: export to ONNX, and an exported file run by ONNX Runtime.
"""
