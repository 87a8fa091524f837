"""Data: the offline copies, MNIST and CIFAR-10, image ranges and grids, resumable batches.

- ``offline``: where the read-only ``shared/data`` folder is;
- ``mnist``, ``cifar10``: each dataset, copied or linked, verified, loaded;
- ``datasets``: both behind one interface (shapes, splits, seeded subsets);
- ``images``: uint8 <-> model range [-1, 1], PNG grids;
- ``batches``: shuffled, resumable mini-batches.

``python -m diffusion_lib.data [ROOT]`` is the project's data step.
"""
