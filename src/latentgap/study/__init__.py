"""Studies: the spec of a grid, task kinds and grid builders, the runner and its executors (local, Slurm),
and paired statistics."""

from .grids import GRIDS, classification_grid
from .runner import StudySummary, run_study
from .spec import StudySpec, load_preset, load_spec, preset_names, spec_from_dict, with_overrides
from .tasks import TASK_KINDS, Inputs, Task, register_task

__all__ = ["GRIDS", "TASK_KINDS", "Inputs", "StudySpec", "StudySummary", "Task", "classification_grid",
           "load_preset", "load_spec", "preset_names", "register_task", "run_study", "spec_from_dict", "with_overrides"]
