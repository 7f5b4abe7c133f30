#!/usr/bin/env bash
# latentgap CI: recipe from /work/shared/slurm/README.md (single node on 127.0.0.1, munge, slurmdbd + MariaDB so sacct works).
# Single-node Slurm 22.05 (Debian 12 packages) on localhost, run as root, no systemd.
# WITH_DBD=1 (default) also starts MariaDB + slurmdbd so that `sacct` works
# (submitit needs sacct to notice jobs that die without writing a result).
set -euo pipefail
WITH_DBD=${WITH_DBD:-1}
S=${SLURM_TMP:-/tmp/slurm-ci}          # all slurm state/spool/log/pid files
NODE=localhost                          # node name; slurmd is started with -N localhost
export DEBIAN_FRONTEND=noninteractive

pkgs="slurmctld slurmd slurm-client munge"
[ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
apt-get update -qq
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null

# Always a fresh state: a state or spool dir left by an earlier run (a machine image, a crashed CI) brings
# back its jobs, which hold the node (MIXED/ALLOCATED), so it never becomes idle.
rm -rf "$S"
mkdir -p "$S"/{state,spool,log,run}

wait_for() {  # wait_for <seconds> <cmd...>
  local t=$1; shift
  for _ in $(seq 1 $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "timeout waiting for: $*" >&2; return 1
}

# The node line must not promise more than the machine has: slurmctld drains a node whose slurmd reports
# fewer CPUs or less memory than slurm.conf says, and the node never becomes idle. Tests ask for <= 1.5 GB.
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEM=$(( MEM_MB - 256 < 2000 ? MEM_MB - 256 : 2000 ))

# ---- slurm.conf (written first: sacctmgr/sinfo/... all need it)
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStoragePort=6819"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF


# ---- munge (key is created by the Debian postinst; create one if missing)
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
install -d -o munge -g munge -m 0755 /run/munge
runuser -u munge -- /usr/sbin/munged          # daemonises, pid in /run/munge/munged.pid
wait_for 10 sh -c 'munge -n | unmunge'

# ---- MariaDB (unix socket only) + slurmdbd
if [ "$WITH_DBD" = 1 ]; then
  install -d -o mysql -g root -m 0755 /run/mysqld
  setsid /usr/sbin/mariadbd --user=mysql --skip-networking \
      --pid-file=/run/mysqld/mysqld.pid </dev/null >"$S/log/mariadb.log" 2>&1 &
  wait_for 30 mariadb-admin ping
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  # fresh state dir => job ids restart at 1; drop old accounting rows so sacct ids don't collide
  [ -e "$S/state/clustername" ] || mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$S/run/slurmdbd.pid
LogFile=$S/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf        # slurmdbd checks this file is 0600 (holds the DB password)
  /usr/sbin/slurmdbd
  wait_for 60 sacctmgr -n show cluster
fi

/usr/sbin/slurmctld -i
/usr/sbin/slurmd -N "$NODE"
if ! wait_for 30 sh -c 'sinfo -h -o %T | grep -qx idle'; then
  # a node left drained or down by a previous slurmctld state: return it to service once, then wait again
  scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
  if ! wait_for 60 sh -c 'sinfo -h -o %T | grep -qx idle'; then
    echo "== Slurm did not become idle; diagnostics follow" >&2
    sinfo -R >&2 || true
    scontrol show node "$NODE" >&2 || true
    for f in slurmctld slurmd slurmdbd; do echo "-- $S/log/$f.log" >&2; tail -n 25 "$S/log/$f.log" >&2 || true; done
    exit 1
  fi
fi
sinfo
