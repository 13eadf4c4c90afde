"""The paper's experiments, one command each: experiments are data, runners are functions.

``resnetlab reproduce EXPERIMENT [key=value ...] [--data NAME=PATH] [--out ROOT]`` runs one
entry of :data:`EXPERIMENTS`.  The defaults of every entry are the paper's settings; a
``key=value`` override (``iterations=2000``, ``depths=[20,56]``, ``seeds=[0,1,2]``,
``train_subset=5000``) shortens a run, and every table and plot then says ``shortened: ...``.
Keys of the training recipe (``device``, ``amp``, ``lr``, ...) are passed through to
:func:`resnetlab.train.train`; those that change the result are listed as changes.

- :mod:`.experiments`: the settings and the :data:`EXPERIMENTS` table; :func:`run_experiment`
- :mod:`.runners`: one function per experiment (train or reuse its runs, measure)
- :mod:`.runs`: run identity (the resolved config), reuse/resume rules, provenance
- :mod:`.tables`: markdown tables, the paper's claims and our verdicts, figures

Layout of ``ROOT`` (default ``runs/reproduce``)::

    ROOT/runs/<model>-seed<S>-<dataset>[-<shortening>]/   training run folders, shared between
                                                 experiments (ResNet-56 is trained once for
                                                 Table 6, Fig. 6 and Fig. 7); reused or resumed
                                                 only when their saved config is the one wanted
    ROOT/<experiment>/experiment.json            settings, note, data set, command, hardware,
                                                 wall time, results
    ROOT/<experiment>/table.md, *.png            what REPORT.md shows (``resnetlab report``)
"""

from .experiments import (DEFAULT_ROOT, EXPERIMENTS, CifarSettings, Experiment, Table1Settings, run_experiment,
                          settings_note)
from .runners import mean_std
from .runs import hardware, run_summary

__all__ = [
    "Table1Settings",
    "CifarSettings",
    "Experiment",
    "EXPERIMENTS",
    "DEFAULT_ROOT",
    "settings_note",
    "run_experiment",
    "hardware",
    "mean_std",
    "run_summary",
]
