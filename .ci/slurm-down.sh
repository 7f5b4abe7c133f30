#!/usr/bin/env bash
# latentgap CI: counterpart of .ci/slurm-up.sh (recipe in /work/shared/slurm/README.md).
# Stop every daemon started by slurm-up.sh, by PID (never by name).
S=${SLURM_TMP:-/tmp/slurm-ci}
stop() {  # stop <pidfile>
  [ -s "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0
    # a daemonised process whose parent never reaps it stays a zombie: treat as stopped
    grep -q '^State:.*Z' /proc/$pid/status 2>/dev/null && return 0; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
}
stop "$S/run/slurmd.pid"
stop "$S/run/slurmctld.pid"
stop "$S/run/slurmdbd.pid"
stop /run/mysqld/mysqld.pid
stop /run/munge/munged.pid
