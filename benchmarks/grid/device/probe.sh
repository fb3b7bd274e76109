# Call 1 on the lent machine: unpack the assets to /tmp/fj, check the software, run one tiny
# 2-step glue cell on the GPU; if the machine's flax/optax/orbax fail it, retry with ours.
set -u
t0=$(date +%s)
mkdir -p /tmp/fj && tar -C /tmp/fj -xJf .gpu/a/assets.tar.xz && cp .gpu/a/modelA /tmp/fj/modelA || exit 3
nvidia-smi -L; nproc; free -g | head -2
export XLA_PYTHON_CLIENT_PREALLOCATE=false TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
probe() {
  python3 -c "import jax, flax, optax, orbax.checkpoint, transformers, ml_collections; print('versions', jax.__version__, flax.__version__, optax.__version__, transformers.__version__, jax.devices())" && \
  python3 .gpu/a/probe.py
}
export PYTHONPATH=/tmp/fj/site:$PWD
if probe > $OUT/probe_own.log 2>&1; then echo own > /tmp/fj/mode; else
  tail -n 30 $OUT/probe_own.log
  export PYTHONPATH=/tmp/fj/pinned:/tmp/fj/site:$PWD
  if probe > $OUT/probe_pinned.log 2>&1; then echo pinned > /tmp/fj/mode; else echo none > /tmp/fj/mode; tail -n 30 $OUT/probe_pinned.log; fi
fi
echo "mode: $(cat /tmp/fj/mode)"; tail -n 5 $OUT/probe_*.log; echo "probe took $(( $(date +%s) - t0 )) s"
