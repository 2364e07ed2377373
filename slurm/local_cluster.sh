#!/usr/bin/env bash
# A real two-node Slurm cluster on this one host, for the `slurm` tests and for
# trying the sbatch templates without a cluster account.
#
#   slurm/local_cluster.sh start    # install (if needed), configure, start; idempotent
#   slurm/local_cluster.sh status   # daemons alive? node states
#   slurm/local_cluster.sh stop     # cancel our jobs, stop the daemons by PID; idempotent
#   eval "$(slurm/local_cluster.sh env)"   # export SLURM_CONF into this shell
#
# `start` prints `export SLURM_CONF=...` on stdout (messages go to stderr), so
# `eval "$(slurm/local_cluster.sh start)"` works too. The same line is in $STATE/env.sh.
#
# Environment:
#   NI_SLURM_DIR            state dir (config, keys, logs, pids)        [/tmp/ni-slurm]
#   NI_SLURM_PORT_BASE      slurmctld port; the slurmds use the next ones [26817]
#   NI_SLURM_MASTER_PORT_BASE, NI_SLURM_MASTER_PORTS
#                           each job's DDP rendezvous port is BASE + job id mod PORTS
#                           [PORT_BASE + 3, 16]; Lightning's default (15000 + job id)
#                           would be the same in two clusters on one host
#   NI_SLURM_CPUS_PER_NODE  CPUs each simulated node offers             [1]
#   NI_SLURM_START_TIMEOUT  seconds to wait for both nodes to be idle   [60]
#
# Needs root: Debian's packages are installed with apt-get, and slurmd runs jobs as
# their submitting user. Debian refuses the packages' own service start inside a
# container (policy-rc.d), so the daemons are started here, in the foreground (-D/-F)
# under setsid, and stopped by the PIDs recorded in $STATE/pids/.
set -euo pipefail

STATE=${NI_SLURM_DIR:-/tmp/ni-slurm}
PORT_BASE=${NI_SLURM_PORT_BASE:-26817}
CPUS_PER_NODE=${NI_SLURM_CPUS_PER_NODE:-1}
MASTER_PORT_BASE=${NI_SLURM_MASTER_PORT_BASE:-$((PORT_BASE + 3))}
MASTER_PORTS=${NI_SLURM_MASTER_PORTS:-16}
START_TIMEOUT=${NI_SLURM_START_TIMEOUT:-60}
NODES=(n1 n2)
PACKAGES=(slurmctld slurmd slurm-client munge)

CONF="$STATE/slurm.conf"
MUNGE_DIR="$STATE/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
PID_DIR="$STATE/pids"
LOG_DIR="$STATE/log"

say() { echo "local_cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

pid_alive() {  # pid_alive NAME -> 0 if $PID_DIR/NAME.pid names a live process
    local f="$PID_DIR/$1.pid"
    [[ -s "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) -eq 0 ]] || die "Slurm packages missing (${missing[*]}) and not root: run as root or 'apt-get install ${PACKAGES[*]}'"
    command -v apt-get >/dev/null || die "Slurm packages missing (${missing[*]}) and no apt-get: install Slurm + munge by hand"
    say "installing ${PACKAGES[*]} (apt-get, --no-install-recommends)"
    export DEBIAN_FRONTEND=noninteractive
    # Another session installing at the same time holds dpkg's lock: wait for it, not fail.
    local apt=(apt-get -o DPkg::Lock::Timeout=300)
    if ! "${apt[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >"$LOG_DIR/apt.log" 2>&1; then
        # A fresh container often has no package lists yet.
        say "install failed; running apt-get update once and retrying (log: $LOG_DIR/apt.log)"
        "${apt[@]}" update >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed, see $LOG_DIR/apt.log"
        "${apt[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >>"$LOG_DIR/apt.log" 2>&1 \
            || die "apt-get install ${PACKAGES[*]} failed, see $LOG_DIR/apt.log"
    fi
}

write_config() {
    mkdir -p "$STATE/ctld" "$MUNGE_DIR" "$PID_DIR" "$LOG_DIR"
    for n in "${NODES[@]}"; do mkdir -p "$STATE/spool-$n"; done
    # munged refuses a socket dir others can write to, yet clients (slurmstepd for
    # any user) must traverse it: 711 is what it accepts.
    chmod 700 "$STATE/ctld"
    chmod 711 "$MUNGE_DIR"
    if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force
        else
            dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chmod 400 "$MUNGE_DIR/munge.key"

    # Node names n1/n2 do not resolve, so tasks get the rendezvous address here
    # (Lightning's SLURMEnvironment would otherwise use the first node name), and a port
    # from this cluster's own block: every task of a job computes the same one.
    cat >"$STATE/task_prolog.sh" <<EOF
#!/bin/sh
echo "export MASTER_ADDR=127.0.0.1"
echo "export MASTER_PORT=\$(( $MASTER_PORT_BASE + \${SLURM_JOB_ID:-0} % $MASTER_PORTS ))"
EOF
    chmod 755 "$STATE/task_prolog.sh"

    local mem_mb
    # Report a little under the real memory: slurmd drains a node that claims more.
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    local ctld_port=$PORT_BASE
    {
        echo "# generated by slurm/local_cluster.sh; edit that script, not this file"
        echo "ClusterName=nilocal"
        echo "SlurmctldHost=localhost(127.0.0.1)"
        echo "SlurmctldPort=$ctld_port"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/munge"
        echo "CredType=cred/munge"
        echo "AuthInfo=socket=$MUNGE_SOCKET"
        echo "StateSaveLocation=$STATE/ctld"
        echo "SlurmdSpoolDir=$STATE/spool-%n"
        echo "SlurmctldPidFile=$PID_DIR/slurmctld.self.pid"
        echo "SlurmdPidFile=$PID_DIR/slurmd-%n.self.pid"
        echo "SlurmctldLogFile=$LOG_DIR/slurmctld.log"
        echo "SlurmdLogFile=$LOG_DIR/slurmd-%n.log"
        echo "SlurmctldDebug=info"
        echo "SlurmdDebug=info"
        # No cgroups in a container: track processes via /proc, bind nothing.
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "TaskProlog=$STATE/task_prolog.sh"
        echo "MpiDefault=none"
        echo "SwitchType=switch/none"
        echo "LaunchParameters=use_interactive_step"
        echo "SchedulerType=sched/backfill"
        # Without this a trivial job waits seconds to be scheduled.
        echo "SchedulerParameters=batch_sched_delay=0"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_CPU"
        echo "ReturnToService=2"
        echo "SlurmctldTimeout=30"
        echo "SlurmdTimeout=30"
        echo "InactiveLimit=0"
        echo "MinJobAge=300"
        echo "KillWait=10"
        echo "Waittime=0"
        echo "JobRequeue=1"
        # No slurmdbd here: sacct fails, which submitit tolerates.
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "JobCompType=jobcomp/none"
        local i=1
        for n in "${NODES[@]}"; do
            echo "NodeName=$n NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((ctld_port + i)) CPUs=$CPUS_PER_NODE RealMemory=$mem_mb State=UNKNOWN"
            i=$((i + 1))
        done
        echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP"
    } >"$CONF"
    echo "export SLURM_CONF=$CONF" >"$STATE/env.sh"
}

start_daemon() {  # start_daemon NAME COMMAND... ; foreground daemon under setsid, pid recorded
    local name=$1; shift
    if pid_alive "$name"; then return 0; fi
    setsid "$@" >>"$LOG_DIR/$name.out" 2>&1 </dev/null &
    echo $! >"$PID_DIR/$name.pid"
}

nodes_idle() {
    local states
    states=$(SLURM_CONF=$CONF sinfo -h -N -o "%N %T" 2>/dev/null) || return 1
    local n
    for n in "${NODES[@]}"; do
        grep -Eq "^$n (idle|mixed|allocated)" <<<"$states" || return 1
    done
}

cmd_start() {
    mkdir -p "$LOG_DIR"
    install_packages
    if pid_alive munged && pid_alive slurmctld && pid_alive "slurmd-${NODES[0]}" && pid_alive "slurmd-${NODES[1]}" && nodes_idle; then
        say "already running ($CONF)"
        cat "$STATE/env.sh"
        return 0
    fi
    write_config
    export SLURM_CONF=$CONF
    start_daemon munged munged -F --force \
        --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$PID_DIR/munged.self.pid" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed"
    local t=0
    until [[ -S "$MUNGE_SOCKET" ]]; do
        pid_alive munged || die "munged exited; see $LOG_DIR/munged.out and $LOG_DIR/munged.log"
        sleep 0.2; t=$((t + 1)); ((t < 50)) || die "munged socket $MUNGE_SOCKET did not appear in 10 s"
    done
    # -c: a test cluster starts from no jobs, whatever a killed run left in its state.
    start_daemon slurmctld slurmctld -D -c -f "$CONF"
    for n in "${NODES[@]}"; do
        start_daemon "slurmd-$n" slurmd -D -N "$n" -f "$CONF"
    done
    local deadline=$((SECONDS + START_TIMEOUT))
    until nodes_idle; do
        for name in munged slurmctld "slurmd-${NODES[0]}" "slurmd-${NODES[1]}"; do
            pid_alive "$name" || die "$name exited during start; see $LOG_DIR/$name.out and $LOG_DIR/*.log"
        done
        ((SECONDS < deadline)) || die "nodes not idle after ${START_TIMEOUT}s: $(sinfo -h -N -o '%N %T' 2>&1 | tr '\n' ' '); see $LOG_DIR"
        sleep 0.5
    done
    say "up: $(sinfo -h -N -o '%N=%T' | tr '\n' ' ')(config $CONF)"
    cat "$STATE/env.sh"
}

cmd_stop() {
    if [[ -s "$CONF" ]] && pid_alive slurmctld; then
        # Jobs of this cluster only: the config names our controller.
        SLURM_CONF=$CONF scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        sleep 1
    fi
    local name pid
    for name in "slurmd-${NODES[1]}" "slurmd-${NODES[0]}" slurmctld munged; do
        if pid_alive "$name"; then
            pid=$(cat "$PID_DIR/$name.pid")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            if kill -0 "$pid" 2>/dev/null; then
                say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$PID_DIR/$name.pid"
    done
    say "stopped"
}

cmd_status() {
    local name rc=0
    for name in munged slurmctld "slurmd-${NODES[0]}" "slurmd-${NODES[1]}"; do
        if pid_alive "$name"; then
            echo "$name: running (pid $(cat "$PID_DIR/$name.pid"))"
        else
            echo "$name: stopped"; rc=1
        fi
    done
    if ((rc == 0)); then SLURM_CONF=$CONF sinfo -N || rc=1; fi
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) [[ -s "$STATE/env.sh" ]] && cat "$STATE/env.sh" || die "no cluster configured in $STATE; run '$0 start'" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
