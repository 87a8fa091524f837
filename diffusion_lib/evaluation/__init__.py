"""Evaluation (above ``data`` and ``nets``): how good, how diverse, how novel the samples are.

- ``classifiers``: the committed instruments (one small CNN per dataset) and how they are made;
- ``quality``: FID and KID in an instrument's features, class statistics, the real-vs-real floor;
- ``neighbours``: nearest training images (memorisation checks);
- ``gan``: the DCGAN baseline chapter 06 compares against.
"""
