#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the sweep's Slurm test
# (tests/test_slurm.py). Run as root by .ci/run before `make test`.
#
#   1. installs Debian's slurm-wlm and munge (apt-get; skipped when already installed)
#   2. writes a munge key and /etc/slurm/slurm.conf (one controller and one node, both
#      localhost / 127.0.0.1; state, spool, logs and pid files under $STATE_DIR)
#   3. starts munged, slurmctld and slurmd (each skipped when its pid file names a live
#      process), and waits until `sinfo` shows the node up
#
# Idempotent: a second call on a running cluster only checks it (well under a second).
# Loopback only in configuration: both daemons are addressed as 127.0.0.1 and accept
# only munge-signed messages; Slurm has no bind-address setting, so their ports
# (6817, 6818) listen on every interface: keep them closed to the outside by firewall.
# Stop it by the pids in $STATE_DIR/run/*.pid, never by process name.
# No accounting (no slurmdbd): `sacct` is disabled, so the sweep reads job states from
# the run directories and `squeue` (see ../../shared/SLURM.md).
set -euo pipefail

STATE_DIR=${DISENTANGLE_SLURM_DIR:-/var/tmp/disentangle-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by disentangle .ci/start_slurm.sh"
RUN_DIR=$STATE_DIR/run
WAIT_S=${DISENTANGLE_SLURM_WAIT_S:-60}

say() { echo "start_slurm: $*"; }
die() { echo "start_slurm: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"

alive() {  # alive PIDFILE: the pid file exists and names a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {  # the node's state as sinfo prints it (idle, mix, alloc, down*, ...), or nothing
    timeout 10 sinfo --noheader --nodes=localhost --format=%t 2>/dev/null | head -n1 | tr -d ' '
}

# ----------------------------------------------------------------------- fast path
if command -v sinfo >/dev/null && alive "$RUN_DIR/slurmctld.pid" && alive "$RUN_DIR/slurmd.pid"; then
    case "$(node_state)" in
        idle|mix|alloc|comp) say "already running (node $(node_state))"; exit 0 ;;
    esac
fi

# ----------------------------------------------------------------------- 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# ----------------------------------------------------------------------- 2. configuration
mkdir -p "$STATE_DIR"/state "$STATE_DIR"/spool "$STATE_DIR"/log "$RUN_DIR" /etc/slurm

# munge: a 1,024-byte random key, readable by the munge user only
if [ ! -s /etc/munge/munge.key ]; then
    say "writing /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
chmod 755 /run/munge

# slurm.conf: never overwrite one this script did not write
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real cluster's configuration"
fi
# the node's real hardware, as slurmd sees it (CPUs, sockets, cores, threads, memory)
HW=$(slurmd -C | head -n1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
[ -n "$HW" ] || die "slurmd -C printed no hardware description"
NEW_CONF=$(cat <<EOF
$MARKER
# A single-node cluster for tests: controller and node on the loopback address.
ClusterName=disentangle-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups in containers and CI VMs: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# no slurmdbd: sacct answers "accounting storage is disabled"
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=10
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 $HW State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
CONF_CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    say "writing $CONF"
    printf '%s\n' "$NEW_CONF" > "$CONF.tmp.$$"
    mv "$CONF.tmp.$$" "$CONF"
    CONF_CHANGED=1
fi

# ----------------------------------------------------------------------- 3. daemons
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    # munged refuses to run as root with a key owned by munge: run it as the munge user
    # (its pid file goes to a folder the munge user may write; a copy joins the others)
    mkdir -p "$STATE_DIR/munge" && chown munge:munge "$STATE_DIR/munge"
    rm -f "$STATE_DIR/munge/munged.pid"
    runuser -u munge -- /usr/sbin/munged --pid-file="$STATE_DIR/munge/munged.pid" \
        || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge does not answer"
    cp "$STATE_DIR/munge/munged.pid" "$RUN_DIR/munged.pid"
fi

if [ "$CONF_CHANGED" = 1 ]; then
    # daemons started with an older configuration must not keep running with it
    for d in slurmd slurmctld; do
        if alive "$RUN_DIR/$d.pid"; then say "restarting $d (configuration changed)"; kill "$(cat "$RUN_DIR/$d.pid")"; sleep 1; fi
    done
fi
if ! alive "$RUN_DIR/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld -f "$CONF" || die "slurmctld did not start (see $STATE_DIR/log/slurmctld.log)"
fi
if ! alive "$RUN_DIR/slurmd.pid"; then
    say "starting slurmd"
    slurmd -f "$CONF" -N localhost || die "slurmd did not start (see $STATE_DIR/log/slurmd.log)"
fi

# ----------------------------------------------------------------------- wait for the node
resumed=0
for _ in $(seq $((WAIT_S * 2))); do
    state=$(node_state)
    case "$state" in
        idle|mix|alloc|comp) say "node localhost is $state; pid files in $RUN_DIR"; exit 0 ;;
        down*|drain*|drng*|fail*)
            # a node left down by an earlier run: tell the controller it is back
            if [ "$resumed" = 0 ]; then scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true; resumed=1; fi ;;
    esac
    sleep 0.5
done
die "node not up after ${WAIT_S}s (state '${state:-none}'); see $STATE_DIR/log/"
