"""Machine and software facts recorded beside every classifier benchmark (benchmarks/classifier_*, isic_taef2).

The machine these were run on is a shared 2-core VM where other jobs compete for the CPU, so each record
carries the load average at start and end next to wall and CPU (process) time: CPU time is the figure
that is comparable across runs, wall time is what the user waited.
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform's best guess."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU model, logical cores, load average (1/5/15 min), OS and Python."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "loadavg": [round(v, 2) for v in load or []],
            "os": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    """Versions of the packages that change classifier numbers."""
    import numpy
    import sklearn
    import timm
    import torch

    import latentgap

    return {"torch": torch.__version__, "timm": timm.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "latentgap": latentgap.__version__}
