#!/usr/bin/env bash
# Build the SubpixelShuffle1D custom op:
#   src/speechsr/ops/subpixel_shuffle.cc  ->  src/speechsr/ops/_subpixel_shuffle.so
#
# Rebuilds only when the source, the TensorFlow version or the compiler flags
# changed (recorded in src/speechsr/ops/_subpixel_shuffle.stamp).
# Environment: PYTHON (default python3) is the interpreter whose TensorFlow
# provides the compile/link flags; CXX (default g++) is the compiler.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
CXX="${CXX:-g++}"
CXXFLAGS_FIXED="-std=c++17 -shared -fPIC -O2 -Wno-deprecated-declarations -Wno-interference-size"

# SPEECHSR_OPS_DIR: another speechsr/ops folder (an installed package's: `speechsr build-op`).
OPS_DIR="${SPEECHSR_OPS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/speechsr/ops}"
SRC="$OPS_DIR/subpixel_shuffle.cc"
LIB="$OPS_DIR/_subpixel_shuffle.so"
STAMP="$OPS_DIR/_subpixel_shuffle.stamp"

[[ -f "$SRC" ]] || { echo "build_ops.sh: source not found: $SRC" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || { echo "build_ops.sh: python not found: $PYTHON" >&2; exit 1; }

# TensorFlow's version from the installed distribution metadata (no TF import),
# falling back to importing tensorflow.
tf_version="$(TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" - <<'EOF'
import importlib.metadata as md
try:
    dists = md.packages_distributions().get("tensorflow") or []
    print(md.version(dists[0]))
except Exception:
    import tensorflow as tf
    print(tf.__version__)
EOF
)" || { echo "build_ops.sh: TensorFlow is not importable with $PYTHON" >&2; exit 1; }

src_sha="$(sha256sum "$SRC" | cut -d' ' -f1)"
stamp_text="source_sha256=$src_sha
tensorflow=$tf_version
flags=$CXX $CXXFLAGS_FIXED"

if [[ -f "$LIB" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$stamp_text" ]]; then
  echo "subpixel op up to date ($LIB, TensorFlow $tf_version)"
  exit 0
fi

command -v "$CXX" >/dev/null || { echo "build_ops.sh: compiler not found: $CXX" >&2; exit 1; }

# Compile and link flags of the TensorFlow in use (TF's import chatter on
# stderr is shown only if this fails).
tf_log="$(mktemp)"
trap 'rm -f "$tf_log"' EXIT
if ! flags_out="$(TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" -c '
import tensorflow as tf
print(" ".join(tf.sysconfig.get_compile_flags()))
print(" ".join(tf.sysconfig.get_link_flags()))
' 2>"$tf_log")"; then
  echo "build_ops.sh: could not read tf.sysconfig flags with $PYTHON:" >&2
  cat "$tf_log" >&2
  exit 1
fi
mapfile -t tf_flags <<<"$flags_out"
[[ ${#tf_flags[@]} -eq 2 ]] || { echo "build_ops.sh: unexpected tf.sysconfig output: $flags_out" >&2; exit 1; }
read -r -a compile_flags <<<"${tf_flags[0]}"
read -r -a link_flags <<<"${tf_flags[1]}"
read -r -a fixed_flags <<<"$CXXFLAGS_FIXED"

tmp_lib="$LIB.tmp.$$"
tmp_stamp="$STAMP.tmp.$$"
trap 'rm -f "$tf_log" "$tmp_lib" "$tmp_stamp"' EXIT

if [[ -f "$LIB" ]]; then reason="source, TensorFlow version or flags changed"; else reason="library missing"; fi
echo "building subpixel op ($reason): TensorFlow $tf_version"
cmd=("$CXX" "${fixed_flags[@]}" "$SRC" -o "$tmp_lib" "${compile_flags[@]}" "${link_flags[@]}")
echo "+ ${cmd[*]}"
"${cmd[@]}"

printf '%s\n' "$stamp_text" >"$tmp_stamp"
mv -f "$tmp_lib" "$LIB"
mv -f "$tmp_stamp" "$STAMP"
echo "built $LIB"
