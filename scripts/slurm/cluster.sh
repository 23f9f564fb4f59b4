#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (Debian's slurmctld, slurmd and munge), for the real-SLURM tests
# (tests/test_slurm.py, `pytest -m slurm`) and for trying sweeps on SLURM. Started only when asked:
#
#   bash scripts/slurm/cluster.sh start [--install]   # --install: apt-get install slurm-wlm munge if missing (root)
#   export SLURM_CONF=/tmp/rnnlab-slurm/slurm.conf     # what `start` prints; sinfo, sbatch, srun, scontrol use it
#   bash scripts/slurm/cluster.sh status
#   bash scripts/slurm/cluster.sh stop
#
# State, logs and the filled-in slurm.conf (scripts/slurm/slurm.conf: one node with this machine's cores and memory,
# no accounting database, no cgroups) go to $RNNLAB_SLURM_DIR (default /tmp/rnnlab-slurm); nothing under /etc/slurm is
# written. The daemons run as root (slurmd must, to start jobs as their users). `start` is idempotent: a cluster
# already answering from that directory is reused. bash scripts/test.sh --slurm calls `start --install` before the
# tests and `stop` after them.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${RNNLAB_SLURM_DIR:-/tmp/rnnlab-slurm}"
CONF="$DIR/slurm.conf"
CTLD_PORT="${RNNLAB_SLURM_CTLD_PORT:-6817}"
D_PORT="${RNNLAB_SLURM_D_PORT:-6818}"
PATH="$PATH:/usr/sbin:/sbin"

fail() { echo "rnnlab: error: slurm cluster: $*" >&2; exit 1; }

answering() { SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o '%T' 2>/dev/null | grep -q -E '^(idle|mixed|allocated)'; }

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && \
        command -v sbatch >/dev/null && return 0
    [ "$(id -u)" = 0 ] || fail "slurmctld, slurmd and munged are not installed, and installing them needs root (apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null || fail "slurmctld, slurmd and munged are not installed and there is no apt-get"
    echo "rnnlab: installing Debian's slurm-wlm and munge"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged is running (the system's, or ours from before)
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        [ "$(id -u)" = 0 ] || fail "no /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        runuser -u munge -- munged
    else
        munged
    fi
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "munged did not start (see /var/log/munge/munged.log)"
}

fill_conf() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc --all)"
    mem="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"  # MB, leaving 10 % to the system
    mkdir -p "$DIR/spool/slurmctld" "$DIR/spool/slurmd" "$DIR/log"
    sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem|g" -e "s|@DIR@|$DIR|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@D_PORT@|$D_PORT|g" "$HERE/slurm.conf" > "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
}

start() {
    local t0 i
    t0=$(date +%s.%N)
    [ "${1:-}" = "--install" ] && install
    command -v slurmctld >/dev/null || fail "slurmctld is not installed (bash scripts/slurm/cluster.sh start --install, as root, installs it)"
    if [ -f "$CONF" ] && answering; then
        echo "rnnlab: a SLURM cluster is already running from $DIR"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    [ "$(id -u)" = 0 ] || fail "slurmd must run as root"
    start_munge
    fill_conf
    stop_daemons quiet
    SLURM_CONF="$CONF" slurmctld -f "$CONF" -c || fail "slurmctld did not start: $(tail -n 3 "$DIR/log/slurmctld.log" 2>/dev/null | tr '\n' ' ')"
    SLURM_CONF="$CONF" slurmd -f "$CONF" -c || fail "slurmd did not start: $(tail -n 3 "$DIR/log/slurmd.log" 2>/dev/null | tr '\n' ' ')"
    for i in $(seq 300); do
        if answering; then
            printf 'rnnlab: SLURM cluster up in %.1f s (node %s, %s CPUs): %s\n' \
                "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$(hostname -s)" "$(nproc --all)" "$DIR"
            echo "export SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.2
    done
    fail "the node did not become idle within 60 s; $(SLURM_CONF="$CONF" sinfo -h -N -o '%N %T %E' 2>&1 | head -n 1); logs in $DIR/log"
}

stop_daemons() {
    local name pid
    for name in slurmd slurmctld; do
        if [ -f "$DIR/$name.pid" ]; then
            pid="$(cat "$DIR/$name.pid" 2>/dev/null || true)"
            [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            rm -f "$DIR/$name.pid"
        fi
    done
    [ "${1:-}" = quiet ] || echo "rnnlab: SLURM cluster in $DIR stopped"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop_daemons ;;
    status)
        if [ -f "$CONF" ] && answering; then
            SLURM_CONF="$CONF" sinfo
            echo "export SLURM_CONF=$CONF"
        else
            echo "rnnlab: no SLURM cluster answers from $DIR"
            exit 1
        fi
        ;;
    *) echo "usage: bash scripts/slurm/cluster.sh start [--install] | stop | status" >&2; exit 2 ;;
esac
