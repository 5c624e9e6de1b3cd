# Sourced by every script (directly or through _launch.sh): its usage, its arguments, and the
# environment variables it reads, each checked before anything runs; a mistake is one line on stderr
# and exit code 2.
#   usage                    print the comment block at the top of the running script
#   no_arguments "$@"        -h/--help: the usage (exit 0); any argument: refused
#   flags_for ENTRY "$@"     the arguments are ENTRY's flags, passed on; -h/--help: the usage (exit 0);
#                            a first argument that is not a flag (-x, --name) is refused
#   bool_var NAME [DEFAULT]  NAME becomes 1 or 0: 1/0, true/false, yes/no, on/off in any case (empty or
#                            unset: DEFAULT, else 0); anything else is refused
#   int_var NAME MIN         NAME, when set and not empty, must be a whole number >= MIN
#   pool_start LOG CMD ...   CMD ... in the background once fewer than JOBS of the pool's jobs run, with
#                            nproc/JOBS threads and its output in LOG; when JOBS <= 1 or DRY_RUN=1 it
#                            runs at once, in this shell, its output on the terminal
#   pool_wait                wait for every job of the pool; each failed job's log is named, and the
#                            function then exits 1
#   for_seeds FUNC           FUNC SEED for each seed of SEEDS through the pool (output in
#                            $BASE/seed<SEED>.log); SEED_DIRS holds $BASE/seed<SEED> of each
usage() {
    sed -n -e '2,/^[^#]/{' -e '/^# /s/^# //p' -e '/^#$/s/^#$//p' -e '}' "$0"
}

script_name() {
    local path="$0"
    case "$path" in "$ROOT"/*) path=${path#"$ROOT"/} ;; esac
    echo "$path"
}

refuse() {
    echo "error: $(script_name) $1; see bash $(script_name) --help" >&2
    exit 2
}

no_arguments() {
    case "${1:-}" in
        "") return 0 ;;
        -h|--help) usage; exit 0 ;;
        *) refuse "takes no arguments, got '$1'" ;;
    esac
}

flags_for() {
    local entry="$1" arg
    shift
    for arg in "$@"; do
        case "$arg" in -h|--help) usage; exit 0 ;; esac
    done
    if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
        refuse "passes its arguments to $entry as flags (--name value), got '$1'"
    fi
}

bool_var() {
    local name="$1" value="${!1:-${2:-0}}"
    case "${value,,}" in
        1|true|yes|on) printf -v "$name" 1 ;;
        0|false|no|off) printf -v "$name" 0 ;;
        *) echo "error: $name must be 1/0, true/false, yes/no or on/off, got '$value'" >&2; exit 2 ;;
    esac
}

int_var() {
    local name="$1" min="$2" value="${!1:-}"
    if [ -z "$value" ]; then return 0; fi
    if ! [[ "$value" =~ ^[0-9]+$ ]] || [ "$((10#$value))" -lt "$min" ]; then
        echo "error: $name must be a whole number >= $min, got '$value'" >&2
        exit 2
    fi
}

POOL_PIDS=()
POOL_LOGS=()
pool_start() {
    local log="$1" threads; shift
    if [ "${JOBS:-1}" -le 1 ] || [ "${DRY_RUN:-0}" = 1 ]; then "$@"; return; fi
    threads=$(( $(nproc) / JOBS )); [ "$threads" -ge 1 ] || threads=1
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    mkdir -p "$(dirname "$log")"
    echo "$*: $threads thread(s), output in $log"
    (export OMP_NUM_THREADS=$threads; "$@") > "$log" 2>&1 &
    POOL_PIDS+=("$!"); POOL_LOGS+=("$log")
}

pool_wait() {
    local i failed=0
    for i in "${!POOL_PIDS[@]}"; do
        wait "${POOL_PIDS[$i]}" || { echo "error: a job failed; see ${POOL_LOGS[$i]}" >&2; failed=1; }
    done
    POOL_PIDS=(); POOL_LOGS=()
    [ "$failed" = 0 ] || exit 1
}

for_seeds() {
    local func="$1" seed
    SEED_DIRS=()
    for seed in $SEEDS; do
        pool_start "$BASE/seed$seed.log" "$func" "$seed"
        SEED_DIRS+=("$BASE/seed$seed")
    done
    pool_wait
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python; fi
