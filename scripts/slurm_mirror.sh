#!/usr/bin/env bash
# Mirror a large MICrONS dataset with a SLURM job array: each array task runs one worker.
#
# 1. Plan once and enqueue the tasks on a queue folder every node can see:
#      microns-get plan em --volume minnie65 --dest /shared/microns --queue fq:///shared/q/em
# 2. Submit the workers:
#      sbatch --array=1-32 scripts/slurm_mirror.sh fq:///shared/q/em /shared/microns
# 3. Watch:
#      microns-get queue status fq:///shared/q/em
#
# Workers lease one task at a time and renew the lease while it runs; a node that dies stops
# renewing and its task returns to the queue after the lease. Each worker keeps its own
# checkpoint (DEST/.microns-get/workers/HOST-PID.sqlite; SQLite is never shared over NFS), and
# each task's finished items are journaled, so a task re-run by another worker skips them.
# A worker exits when the queue is empty. SLURM's SIGTERM at the time limit gives the task back.
#
#SBATCH --job-name=microns-mirror
#SBATCH --cpus-per-task=4
#SBATCH --mem=4G
#SBATCH --time=12:00:00
#SBATCH --output=microns-mirror-%A_%a.log
set -euo pipefail

QUEUE=${1:?usage: sbatch --array=1-N slurm_mirror.sh fq:///shared/queue DEST}
DEST=${2:?usage: sbatch --array=1-N slurm_mirror.sh fq:///shared/queue DEST}
LEASE=${MICRONS_LEASE_SECONDS:-900}        # longer than one task takes without renewal hiccups
JOBS=${MICRONS_JOBS_PER_WORKER:-16}        # concurrent requests per worker
BWLIMIT=${MICRONS_BWLIMIT:-off}            # per worker: the cap is not shared across nodes
MICRONS_GET=${MICRONS_GET:-microns-get}

echo "array task ${SLURM_ARRAY_TASK_ID:-0} on $(hostname): worker for $QUEUE into $DEST"
# exec: SIGTERM from SLURM reaches microns-get itself, which releases its lease.
exec "$MICRONS_GET" worker "$QUEUE" --dest "$DEST" --lease-seconds "$LEASE" --jobs "$JOBS" \
  --bwlimit "$BWLIMIT" --quiet
