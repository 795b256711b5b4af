#!/usr/bin/env bash
# Remake the README's pictures with gdlab itself: bash docs/make_figures.sh (after make run).
set -euo pipefail
cd "$(dirname "$0")/.."
GDLAB="$PWD/.venv/bin/gdlab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$GDLAB descend "(3+3*a)**2" --start a=0.5 --lr 0.05 --steps 12 --out "$work/tutorial" >/dev/null
cp "$work/tutorial/descend.png" docs/descend-tutorial.png
$GDLAB descend rosenbrock --optimizer gd,momentum,adam --lr 0.002 --steps 1500 \
    --out "$work/rosenbrock" >/dev/null  # the command the README's caption shows
cp "$work/rosenbrock/descend.png" docs/descend-rosenbrock.png
$GDLAB fit noisy-plane --lr 0.05 --epochs 300 --out "$work/run" >/dev/null 2>&1
$GDLAB plot "$work/run" >/dev/null
cp "$work/run/surface.png" docs/surface.png
cp "$work/run/gradients.png" docs/gradients.png
$GDLAB compare noisy-plane --lr 0.05 --epochs 60 --batch-sizes full,16,1 --out "$work/compare" \
    >/dev/null
cp "$work/compare/compare.png" docs/compare.png
$GDLAB lr noisy-plane --out "$work/lr" >/dev/null
cp "$work/lr/lr.png" docs/lr.png
$GDLAB sweep noisy-plane --lr 1e-3:2:8 --optimizer gd,momentum --epochs 100 --out "$work/sweep" \
    >/dev/null
cp "$work/sweep/sweep_curves.png" docs/sweep-curves.png
cp "$work/sweep/sweep_final.png" docs/sweep-final.png
$GDLAB fit tutorial-line --lr 0.05 --epochs 60 --out "$work/line" >/dev/null 2>&1
$GDLAB plot "$work/line" --animate >/dev/null
cp "$work/line/line.gif" docs/line.gif
$GDLAB fit noisy-plane --model mlp:16,16,16,16,16,16,16,16,16 --epochs 200 --lr 0.05 \
    --activation sigmoid --out "$work/deep" >/dev/null 2>&1
$GDLAB plot "$work/deep" >/dev/null
cp "$work/deep/layers.png" docs/layers.png
$GDLAB fit noisy-plane --model mlp:32,32 --epochs 300 --lr 0.1 --patience 1000 \
    --track-sharpness 5 --out "$work/edge" >/dev/null 2>&1
$GDLAB plot "$work/edge" >/dev/null
cp "$work/edge/sharpness.png" docs/sharpness.png
(cd "$work" && $GDLAB demo >/dev/null)
cp "$work/runs/demo/loss.png" docs/demo_loss.png
cp "$work/runs/demo/weight_bias_loss.png" docs/demo_weight_bias_loss.png
"$PWD/.venv/bin/python" docs/screenshot_explore.py  # writes docs/explore.png (chromium)
echo "wrote docs/*.png and docs/line.gif"
