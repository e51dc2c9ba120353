#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for autolab's slurm backend tests and benchmark.
#
#   scripts/local-slurm.sh up       install Debian's SLURM + munge (once) and start the daemons
#   scripts/local-slurm.sh down     stop the daemons and remove stale pid files
#   scripts/local-slurm.sh status   say whether the cluster answers (exit 0 when it does)
#
# Runs as root, without systemd (Debian's policy-rc.d stops packages from starting daemons, so
# the daemons are started here directly). `up` is idempotent: up when already up only checks
# the node is usable. There is no accounting database (no slurmdbd): autolab's backend watches
# jobs with squeue plus each job's own exit record, see docs/slurm.md for why.
#
# Partitions: `debug` (default; 8 jobs may share a core, MaxTime 60 min, EnforcePartLimits=ALL
# rejects oversized requests at submit time) and `urgent` (higher PriorityTier: a job there
# preempts, i.e. cancels, debug jobs it needs room from; used to test preemption retries).
# Two more partitions stand for what campus clusters have: `hidden` (Hidden=YES: plain `sinfo`
# does not list it, MaxTime 5 min) and `broken` (Hidden=YES, its only node `ghost` is DOWN and
# never comes up: jobs there pend with ReqNodeNotAvail for ever).
# Jobs over their --mem are killed within a second (jobacct_gather/linux + OverMemoryKill; there
# are no cgroups here). cred_expire=5 makes a requeued job restart after ~6 s instead of ~2 min.
# TaskPlugin=task/affinity binds each job step to the CPUs it asked for (os.sched_getaffinity in
# a job with --cpus-per-task=2 sees 2 CPUs, with 1 sees 1).
#
# The compute node's filesystem view: slurmd runs in its own mount namespace in which
# $NODE_LOCAL (/node-local) is an empty private tmpfs. Jobs inherit slurmd's namespace, so a file
# the orchestrator (the "login node") writes under /node-local is invisible to every job, as a
# login node's local disk is to the compute nodes of a real cluster. Everything else (/tmp,
# /work, /home) is the same for both.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by autolab scripts/local-slurm.sh"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
PACKAGES=(slurmctld slurmd slurm-client munge)
NODE_LOCAL=/node-local

log() { echo "local-slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts daemons)"

alive() {  # alive PIDFILE: the pid in it names a running process
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_conf() {
    if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away to use the local cluster"
    fi
    local host node_line
    host=$(hostname -s)
    # The node line comes from slurmd -C (NodeName must equal `hostname -s`); drop UpTime.
    node_line=$(slurmd -C | head -n1)
    [[ $node_line == NodeName=$host* ]] || die "slurmd -C reported '$node_line', expected NodeName=$host"
    mkdir -p "$CONF_DIR"
    cat >"$CONF.tmp" <<EOF
$MARKER
ClusterName=autolab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SwitchType=switch/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=$STATE_DIR/slurmd
StateSaveLocation=$STATE_DIR/slurmctld
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
EnforcePartLimits=ALL
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
NodeName=ghost NodeAddr=192.0.2.1 CPUs=1 RealMemory=1000 State=DOWN Reason="never_comes_up"
PartitionName=debug Nodes=$host Default=YES MaxTime=60 State=UP OverSubscribe=FORCE:8 PriorityTier=1
PartitionName=urgent Nodes=$host Default=NO MaxTime=10 State=UP PriorityTier=10
PartitionName=hidden Nodes=$host Default=NO MaxTime=5 State=UP Hidden=YES OverSubscribe=FORCE:8 PriorityTier=1
PartitionName=broken Nodes=ghost Default=NO MaxTime=10 State=UP Hidden=YES
EOF
    chmod 644 "$CONF.tmp"
    if [[ -f $CONF ]] && cmp -s "$CONF.tmp" "$CONF"; then
        rm -f "$CONF.tmp"
        return 1  # unchanged
    fi
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    alive /run/munge/munged.pid && return 0
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; }
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged
}

start_slurm() {
    mkdir -p "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    chown slurm:slurm "$LOG_DIR" "$STATE_DIR/slurmctld"
    if ! alive /run/slurmctld.pid; then
        rm -f /run/slurmctld.pid
        /usr/sbin/slurmctld
    fi
    if ! alive /run/slurmd.pid; then
        rm -f /run/slurmd.pid
        mkdir -p "$NODE_LOCAL"
        chmod 1777 "$NODE_LOCAL"
        # the compute node's own /node-local (see the header): slurmd and every job it starts
        # live in a mount namespace where it is an empty tmpfs
        unshare --mount --propagation slave sh -c \
            "mount -t tmpfs -o mode=1777,size=64m node-local '$NODE_LOCAL' && exec /usr/sbin/slurmd"
    fi
}

wait_ready() {  # the controller answers and the node takes jobs
    local host state i
    host=$(hostname -s)
    for i in $(seq 1 100); do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n1 || true)
        case $state in
            idle*|mixed*|allocated*|completing*) return 0 ;;
            drain*|down*)
                scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.1
    done
    die "the node did not come up (state '${state:-none}'); see $LOG_DIR/slurmctld.log and slurmd.log"
}

share_python() {
    # The campus-like tests submit as an unprivileged user (tests/slurm_cluster.py creates it),
    # who must run the same Python as root, as users share a cluster's software installs. Make
    # the directories above python3 traversable (o+x only: nothing becomes listable).
    local py dir
    py=$(python3 -c "import sys; print(sys.executable)" 2>/dev/null) || return 0
    dir=$(dirname "$py")
    while [[ $dir != / ]]; do
        [[ $(stat -c %A "$dir") =~ [xt]$ ]] || chmod o+x "$dir"
        dir=$(dirname "$dir")
    done
}

cmd_up() {
    local t0=$SECONDS
    install_packages
    share_python
    if write_conf; then  # the configuration changed: running daemons must restart to read it
        stop_pidfile slurmd /run/slurmd.pid
        stop_pidfile slurmctld /run/slurmctld.pid
    fi
    start_munge
    start_slurm
    wait_ready
    # ghost's address (TEST-NET-1) never answers; say so at once instead of after SlurmdTimeout
    scontrol update NodeName=ghost State=DOWN Reason=never_comes_up 2>/dev/null || true
    log "up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %a %D %T' | tr '\n' ';')"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
    local pid i
    if alive "$2"; then
        pid=$(cat "$2")
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        log "stopped $1"
    fi
    rm -f "$2"
}

cmd_down() {
    if [[ -f $CONF ]] && grep -qF "$MARKER" "$CONF" && alive /run/slurmctld.pid; then
        scancel --full --quiet --user=root 2>/dev/null || true
    fi
    stop_pidfile slurmd /run/slurmd.pid
    stop_pidfile slurmctld /run/slurmctld.pid
    stop_pidfile munged /run/munge/munged.pid
}

cmd_status() {
    if alive /run/slurmctld.pid && alive /run/slurmd.pid && sinfo -h >/dev/null 2>&1; then
        sinfo
        exit 0
    fi
    echo "the local SLURM cluster is not up: run scripts/local-slurm.sh up"
    exit 1
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
