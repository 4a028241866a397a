"""The layer-contribution sweep: runs, C(k) with its errors, reports, comparisons.

Importing it also adds `topK@SWEEP_DIR` / `bottomK@SWEEP_DIR` to the selection grammar
(jaxlayer.sweep.strategies).
"""

from jaxlayer.sweep import strategies
from jaxlayer.sweep.compare import compare_sweep_dirs, compare_sweeps
from jaxlayer.sweep.contribution import (UndefinedContributionWarning, layer_contribution,
                                         standard_error, summarize_sweep)
from jaxlayer.sweep.report import write_report
from jaxlayer.sweep.runner import run_sweep

__all__ = ["UndefinedContributionWarning", "compare_sweep_dirs", "compare_sweeps",
           "layer_contribution", "run_sweep", "standard_error", "strategies", "summarize_sweep",
           "write_report"]
