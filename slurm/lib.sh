# Shared by the sbatch templates (sourced, not run). Expects to run in the repository root.
#
#   ni_train_command          -> fills the array NI_TRAIN_CMD (how to start ni-train)
#   ni_compare_command        -> fills the array NI_COMPARE_CMD (how to start ni-compare)
#   ni_has_override KEY ARGS  -> 0 if ARGS set KEY (KEY=..., +KEY=..., ++KEY=...)
#   ni_resume_overrides ARGS  -> fills the array NI_RESUME_ARGS for a requeued job

# NI_TRAIN: the ni-train command line (split on spaces), default $NI_BIN/ni-train with
# NI_BIN=.venv/bin, e.g. NI_TRAIN="python -m nowcast_infill.cli.train".
ni_train_command() {
    local bin=${NI_BIN:-.venv/bin}
    read -r -a NI_TRAIN_CMD <<<"${NI_TRAIN:-$bin/ni-train}"
    if ! command -v "${NI_TRAIN_CMD[0]}" >/dev/null; then
        echo "slurm: '${NI_TRAIN_CMD[0]}' not found from $PWD: submit from the repository root after 'make install', or set NI_BIN / NI_TRAIN" >&2
        return 2
    fi
}

# NI_COMPARE: the ni-compare command line, default $NI_BIN/ni-compare, else `python -m` with
# the interpreter of NI_BIN (an environment installed before ni-compare existed).
ni_compare_command() {
    local bin=${NI_BIN:-.venv/bin}
    if [[ -n ${NI_COMPARE:-} ]]; then
        read -r -a NI_COMPARE_CMD <<<"$NI_COMPARE"
    elif [[ -x $bin/ni-compare ]]; then
        NI_COMPARE_CMD=("$bin/ni-compare")
    else
        NI_COMPARE_CMD=("$bin/python" -m nowcast_infill.cli.compare)
    fi
    if ! command -v "${NI_COMPARE_CMD[0]}" >/dev/null; then
        echo "slurm: '${NI_COMPARE_CMD[0]}' not found from $PWD: set NI_BIN or NI_COMPARE" >&2
        return 2
    fi
}

ni_has_override() {
    local key=$1 arg
    shift
    for arg in "$@"; do
        [[ $arg == "$key="* || $arg == "+$key="* || $arg == "++$key="* ]] && return 0
    done
    return 1
}

# After a requeue (SLURM_RESTART_COUNT > 0) the job id, hence the run directory, is the
# same. Lightning resumes by itself from <run dir>/hpc_ckpt_N.ckpt, which it writes on the
# SIGUSR1 sent before the time limit; after a preemption or node failure there is only
# checkpoints/last.ckpt, so that is passed as ckpt_path when it is the newer one.
# An explicit ckpt_path override is always kept.
ni_resume_overrides() {
    NI_RESUME_ARGS=()
    [[ ${SLURM_RESTART_COUNT:-0} -gt 0 ]] || return 0
    ni_has_override ckpt_path "$@" && return 0
    local run_dir newest
    # Ask ni-train itself where this job's run directory is (it depends on the overrides).
    run_dir=$("${NI_TRAIN_CMD[@]}" "$@" --cfg all --package hydra.run --resolve 2>/dev/null | sed -n 's/^dir: //p')
    if [[ -z $run_dir ]]; then
        echo "slurm: restart ${SLURM_RESTART_COUNT}: could not resolve the run directory; starting afresh" >&2
        return 0
    fi
    newest=$(ls -t "$run_dir"/hpc_ckpt_*.ckpt "$run_dir"/checkpoints/last.ckpt 2>/dev/null | head -n 1 || true)
    case $newest in
        "") echo "slurm: restart ${SLURM_RESTART_COUNT}: no checkpoint in $run_dir yet; starting afresh" >&2 ;;
        */hpc_ckpt_*) echo "slurm: restart ${SLURM_RESTART_COUNT}: Lightning resumes from $newest" >&2 ;;
        *)
            echo "slurm: restart ${SLURM_RESTART_COUNT}: resuming from $newest" >&2
            NI_RESUME_ARGS=("ckpt_path=$newest")
            ;;
    esac
}
