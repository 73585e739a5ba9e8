#!/usr/bin/env bash
# Build the training corpus of the shipped 4x and 8k models (model cards, "Training toward the
# peers") in one command: LibriSpeech train-clean-100 (../shared), speechocean762 and LJSpeech
# LJ001-LJ002, cut into 2-s clip pairs, with one train CSV per rate in which LibriSpeech counts twice.
#
#   preprocessing/build_training_corpus.sh RUNS SPEECHOCEAN762_WAVE_DIR LJSPEECH_WAVS_DIR
#
# RUNS: where the data goes (outside the work tree for runs across sessions); writes
# RUNS/data/{librispeech,so762,lj}_{4x,8k}_clips/ and RUNS/data/train_{4x,8k}_all.csv (paths
# relative to RUNS/data). Validation CSVs:
# RUNS/data/librispeech_{4x,8k}_clips/validation.csv. Reruns reuse finished recordings.
# RUNS=. (the project) puts them where settings/spectral_4x and spectral_8k look (data/...).
# LIBRISPEECH=DIR (holding train-clean-100/) replaces ../shared/data/librispeech-subset.
# The corpora are public git repositories (fetch them, then `git archive HEAD WAVE` of
# jimbozhang/speechocean762 and `git archive HEAD LJSpeech-1.1` of
# PrernaSocity/lj_speech_dataset_part_1; licences in the model cards).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 RUNS SPEECHOCEAN762_WAVE_DIR LJSPEECH_WAVS_DIR" >&2
    exit 2
fi
RUNS=$1 SO762=$2 LJ=$3
for d in "$SO762" "$LJ"; do
    [ -d "$d" ] || { echo "error: no such folder: $d" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=$RUNS/data
mkdir -p "$DATA"

# clips of one corpus at one rate: NAME RATE SETTINGS [INPUT_DIR]; LibriSpeech keeps the
# settings' folder layout and validation fraction, the others are flat .wav folders, all training
clips() {
    local name=$1 rate=$2 s=$3 input=${4:-}
    local out=$DATA/${name}_${rate}_clips extra=() fraction=()
    if [ "$name" = librispeech ]; then
        [ -n "$input" ] && extra=(--input-dir "$input")
    else
        extra=(--input-dir "$input" --set 'input_dir_name_dirs=[]' --set 'input_data_suffix=[".wav"]')
        fraction=(--validation-fraction 0)   # validation: LibriSpeech recordings only
    fi
    "$PY" preprocessing/splice_raw_data.py --settings "$s" --output-dir "$out" "${extra[@]}" --no-progress
    "$PY" preprocessing/test_train_split.py --settings "$s" --output-dir "$out" "${fraction[@]}"
}

# one train CSV of a rate, paths relative to RUNS/data: LibriSpeech twice, then the other two
combine() {
    local rate=$1 sources=() name
    for name in librispeech librispeech so762 lj; do
        sources+=("$DATA/${name}_${rate}_clips/train.csv")
    done
    "$PY" -c 'import sys; from speechsr.split import concatenate_csvs
print(f"wrote {sys.argv[1]}: {concatenate_csvs(sys.argv[2:], sys.argv[1])} clips")' \
        "$DATA/train_${rate}_all.csv" "${sources[@]}"
}

for rate in 4x 8k; do
    if [ $rate = 4x ]; then s=settings/spectral_4x; else s=settings/fullband_8k; fi
    clips librispeech $rate $s "${LIBRISPEECH:-}"
    clips so762 $rate $s "$SO762"
    clips lj $rate $s "$LJ"
    combine $rate
done
