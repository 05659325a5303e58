#!/usr/bin/env bash
# Multi-node U-GAT-IT training under SLURM: one torchrun per node, 4 GPUs per node.
#   sbatch examples/slurm_train.sh /data/selfie2anime runs/selfie2anime
#SBATCH --job-name=unpaired
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=48:00:00
#SBATCH --requeue
set -euo pipefail
DATA=${1:?dataset folder}
RUN=${2:?run directory on a shared filesystem}

# The first node of the allocation hosts the rendezvous.
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

# --auto-resume: a requeued job, or a torchrun restart after a rank died, continues from the
# newest complete checkpoint instead of starting over.
srun torchrun \
  --nnodes "$SLURM_NNODES" --nproc-per-node 4 \
  --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$HEAD:29500" \
  --max-restarts 3 \
  -m unpaired train --auto-resume --data "$DATA" --out "$RUN" \
  --light --img-size 256 --batch-size 1 --save-freq 5000 --print-freq 1000
