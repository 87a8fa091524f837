"""Evaluation (above ``data`` and ``nets``): how good, how diverse, how novel the samples are.

- ``classifiers``: the committed instruments (one small CNN per dataset) and how they are made;
- ``quality``: FID, KID, precision and recall in an instrument's features with bootstrap intervals,
  class statistics, the real-vs-real floor;
- ``comparison``: arms trained with several seeds compared through a pooled t interval;
- ``floor``: a sample set read against the real-vs-real floor at its own N (excess, ratio, growth with N);
- ``likelihood``: negative log-likelihood in bits/dim from the variational bound;
- ``neighbours``: nearest training images, in pixels and in the instrument's features (memorisation);
- ``paths``: how an interpolation path changes through an instrument (step sizes, class changes, ink);
- ``gan``: the DCGAN baseline chapter 07 compares against.
"""
