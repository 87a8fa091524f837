"""The foundation every other layer stands on (PyTorch and the standard library only).

- ``errors``: the project's exceptions, each with one message meant for the user;
- ``files``: atomic writes, tagged torch files, digests, free-space checks;
- ``paths``: the project root and paths relative to it;
- ``devices``: devices and their names, seeded noise, timing;
- ``config``: frozen dataclasses built from YAML, every problem reported at once.
"""
