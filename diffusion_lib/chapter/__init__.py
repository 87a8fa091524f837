"""What the chapters share (the top layer; nothing in the library imports it).

- ``setup``: the first lines of every chapter (results folder, device, figure style);
- ``params``: a chapter's parameters checked before it runs, samplers built from them;
- ``runs``: train a run, or reuse it when it can stand for the configuration;
- ``models``: load a chapter's trained model with its schedule;
- ``evaluate``: sample trained runs from the same x_T and measure them with one instrument;
- ``recipe``: the arms of a training-recipe study (a base configuration and what each arm changes);
- ``overview``: the table of parameters a chapter opens with;
- ``claims``: written answers whose claims are checked against the run's data;
- ``answers``: the answers, shown in their chapter and kept for the book's Answers chapter;
- ``tables``: tables formatted for readers (integers, three significant digits);
- ``style``: the figure theme and one colour per schedule, sampler and model;
- ``plots``: the figures several chapters draw.
"""
