"""Studies: the spec of a grid, the runner and its executors (local, Slurm), and paired statistics."""

from .runner import StudySummary, expand_grid, run_study
from .spec import StudySpec, load_preset, load_spec, preset_names, spec_from_dict, with_overrides

__all__ = ["StudySpec", "StudySummary", "expand_grid", "load_preset", "load_spec", "preset_names", "run_study",
           "spec_from_dict", "with_overrides"]
