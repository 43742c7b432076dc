#!/usr/bin/env bash
# Install a deepseek-offline bundle on an isolated host. Needs only bash, coreutils, openssl and
# python3 (standard library); nothing is downloaded.
#
#   install-offline.sh BUNDLE --pubkey TRUSTED.pub.pem [--prefix /opt/deepseek-offline]
#                      [--env NAME]... [--python python3] [--no-doctor] [--allow-downgrade]
#                      [--max-unpacked-size SIZE]
#
# BUNDLE is a bundle directory, NAME.tar, NAME.parts.json, or a directory holding the volumes.
# Steps: check the volumes -> unpack -> check the signature with the TRUSTED key (given out of
# band) -> check every file against the signed manifest (sha256sum -c) -> venvs -> pip install
# --no-index --require-hashes from the bundle -> the toolkit -> offline settings -> doctor.
# Nothing is installed from a bundle that fails a check. A bundle older than the installed one
# (a replay) is refused unless --allow-downgrade. Re-running after an interruption finishes the
# job. Exit codes: 2 usage, 3 config, 4 not found, 7 integrity, 8 disk, 9 tool, 13 downgrade.
set -Eeuo pipefail
umask 022

PREFIX=/opt/deepseek-offline
PYTHON=python3
PUBKEY=""
BUNDLE=""
ENVS=()
RUN_DOCTOR=1
ALLOW_DOWNGRADE=()
MAX_UNPACKED=()
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '==> %s\n' "$*"; }
die() { # die EXIT_CODE MESSAGE [FIX]
    printf 'error: %s\n' "$2" >&2
    [[ -n ${3:-} ]] && printf '  fix: %s\n' "$3" >&2
    exit "$1"
}
usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --pubkey) PUBKEY=${2:?--pubkey needs a file}; shift 2 ;;
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --env) ENVS+=("${2:?--env needs a name}"); shift 2 ;;
        --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
        --no-doctor) RUN_DOCTOR=0; shift ;;
        --allow-downgrade) ALLOW_DOWNGRADE=(--allow-downgrade); shift ;;
        --max-unpacked-size) MAX_UNPACKED=(--max-unpacked-size "${2:?--max-unpacked-size needs a size}"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die 2 "unknown option $1" ;;
        *) [[ -z $BUNDLE ]] || die 2 "one BUNDLE only (got $BUNDLE and $1)"; BUNDLE=$1; shift ;;
    esac
done
[[ -n $BUNDLE ]] || { usage >&2; die 2 "BUNDLE is required"; }
[[ -n $PUBKEY ]] || die 2 "--pubkey TRUSTED.pub.pem is required" \
    "pass the public key you received out of band; the bundle's own key proves nothing"

for tool in sha256sum openssl "$PYTHON"; do
    command -v "$tool" >/dev/null || die 9 "$tool is not installed" "install it from the OS media"
done
[[ -e $BUNDLE ]] || die 4 "$BUNDLE not found"
[[ -f $PUBKEY ]] || die 4 "trusted public key $PUBKEY not found"
openssl pkey -pubin -in "$PUBKEY" -noout 2>/dev/null ||
    die 3 "$PUBKEY is not a PEM public key" "use the NAME.pub.pem that came with the bundle's key"

mkdir -p "$PREFIX" || die 8 "cannot create $PREFIX" "choose a writable --prefix"
PREFIX=$(cd "$PREFIX" && pwd)
BUNDLE=$(cd "$(dirname "$BUNDLE")" && pwd)/$(basename "$BUNDLE")
FINAL=$PREFIX/bundle
INCOMING=$PREFIX/.bundle.incoming
WORK=$PREFIX/.install
mkdir -p "$WORK"

# One installer at a time; a lock left by a killed run is taken over.
LOCK=$WORK/lock
if ! mkdir "$LOCK" 2>/dev/null; then
    other=$(cat "$LOCK/pid" 2>/dev/null || true)
    if [[ -n $other ]] && kill -0 "$other" 2>/dev/null; then
        die 1 "another install into $PREFIX is running (pid $other)"
    fi
    rm -rf "$LOCK" && mkdir "$LOCK"
fi
echo $$ >"$LOCK/pid"
trap 'rm -rf "$LOCK"' EXIT

py() { "$PYTHON" -I "$@"; }

find_helper() { # find_helper NAME: offline-NAME.py beside this script, or in a source checkout
    local candidate
    for candidate in "$HERE/offline-$1.py" "$HERE/../offline/bundle/$1.py"; do
        [[ -f $candidate ]] && { echo "$candidate"; return; }
    done
    die 4 "offline-$1.py (a stdlib-only helper of this installer) is not next to $0" \
        "use the install-offline.sh that came with the bundle, or a toolkit source checkout"
}
RECORDER=$(find_helper installed) || exit $?

# --- 1. the bundle's files, in a staging directory ------------------------------------------
if [[ -d $BUNDLE && -f $BUNDLE/manifest.json ]]; then
    if [[ $BUNDLE -ef $FINAL ]]; then
        STAGE=$FINAL
        say "re-checking the installed bundle $FINAL"
    else
        say "copying $BUNDLE to $INCOMING"
        rm -rf "$INCOMING"
        cp -R --preserve=timestamps "$BUNDLE" "$INCOMING" ||
            die 8 "copying the bundle into $PREFIX failed (disk full?)" \
                "free space on $PREFIX and run the same command again"
        STAGE=$INCOMING
    fi
else
    helper=$(find_helper archive) || exit $?
    say "checking the volumes and unpacking $BUNDLE into $INCOMING"
    # Volume and member problems are reported by name; a full disk keeps what was unpacked.
    py "$helper" unpack "$BUNDLE" --dest "$INCOMING" "${MAX_UNPACKED[@]}" || exit $?
    STAGE=$INCOMING
fi

refuse() { # refuse EXIT_CODE MESSAGE FIX: a bundle that fails a check is never kept
    [[ $STAGE == "$INCOMING" ]] && rm -rf "$INCOMING"
    die "$@"
}

# --- 2. the signature, with the TRUSTED key -------------------------------------------------
say "checking the signature with the trusted key $PUBKEY"
[[ -f $STAGE/manifest.json ]] || refuse 7 "the bundle has no manifest.json"
[[ -f $STAGE/manifest.sig ]] || refuse 7 "the bundle is not signed (no manifest.sig)" \
    "build it with a key: offline bundle build --key KEY"
der_sha() { openssl pkey -pubin -in "$1" -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1; }
if [[ -f $STAGE/manifest.pub && $(der_sha "$STAGE/manifest.pub") != $(der_sha "$PUBKEY") ]]; then
    refuse 7 "the bundle was signed with a different key than the trusted $PUBKEY" \
        "get the bundle from its trusted source, or the right public key out of band"
fi
openssl pkeyutl -verify -pubin -inkey "$PUBKEY" -rawin -in "$STAGE/manifest.json" \
    -sigfile "$STAGE/manifest.sig" >/dev/null 2>&1 ||
    refuse 7 "manifest.sig does not match manifest.json under the trusted key $PUBKEY" \
        "the manifest was changed or forged: get the bundle again from its source"

# --- 3. every file against the signed manifest ----------------------------------------------
say "checking every file against the signed manifest"
# From the signed manifest (not the unsigned SHA256SUMS): the expected sums, unsafe paths,
# files the manifest does not list, and whether a diff bundle was applied onto its base.
rc=0
py - "$STAGE" >"$WORK/expected.sha256" 2>"$WORK/manifest.err" <<'PY' || rc=$?
import json, os, sys
root = sys.argv[1]
try:
    m = json.load(open(os.path.join(root, "manifest.json")))
    files = list(m["files"])
    for f in files + list(m.get("base_files") or []):
        assert isinstance(f["path"], str) and len(f["sha256"]) == 64
except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
    print(f"manifest.json is not a bundle manifest ({exc!r})", file=sys.stderr)
    sys.exit(7)
if m.get("kind") == "diff":
    base = m.get("base_files") or []
    if not any(os.path.exists(os.path.join(root, f["path"])) for f in base):
        print("a diff bundle: apply it onto the installed bundle first"
              " (offline bundle apply-diff DIFF --base PREFIX)", file=sys.stderr)
        sys.exit(3)
    files += base
bad = [f["path"] for f in files
       if f["path"].startswith("/") or ".." in f["path"].split("/") or "\n" in f["path"]]
if bad:
    print("unsafe paths in the manifest: " + ", ".join(bad), file=sys.stderr)
    sys.exit(7)
listed = {f["path"] for f in files} | {"manifest.json", "manifest.sig", "SHA256SUMS"}
extra = []
for top, dirs, names in os.walk(root):
    for name in names + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
        rel = os.path.relpath(os.path.join(top, name), root)
        if rel not in listed:
            extra.append(rel)
for f in files:
    print(f"{f['sha256']}  {f['path']}")
if extra:
    print("files the manifest does not list: " + ", ".join(sorted(extra)), file=sys.stderr)
    sys.exit(7)
PY
((rc == 0)) || refuse "$rc" "$(cat "$WORK/manifest.err")" "get the bundle again from its source"
if ! (cd "$STAGE" && sha256sum --quiet --strict -c "$WORK/expected.sha256") >"$WORK/sums.out" 2>&1; then
    sed 's/^/  /' "$WORK/sums.out" >&2
    refuse 7 "files of the bundle do not match its signed manifest (listed above)" \
        "copy the named files (or the whole bundle) again from the connected side"
fi

manifest_get() { # manifest_get PYTHON-EXPRESSION-ON-m
    py -c "import json,sys; m=json.load(open(sys.argv[1])); print($1)" "$STAGE/manifest.json"
}
NAME=$(manifest_get 'm["bundle"]["name"] + " " + m["bundle"]["version"]')
TARGET_PY=$(manifest_get 'm["target"]["python"]')
PLATFORMS=$(manifest_get '" ".join(m["target"]["platforms"])')
say "verified $NAME"

# The host must be what the bundle was built for.
HOST_PY=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $HOST_PY == "$TARGET_PY" ]] ||
    die 3 "$PYTHON is Python $HOST_PY but the bundle is built for Python $TARGET_PY" \
        "pass --python /path/to/python$TARGET_PY"
ARCH=$(uname -m)
[[ " $PLATFORMS " == *"_$ARCH "* ]] ||
    die 3 "this host is $ARCH but the bundle is built for: $PLATFORMS" \
        "build a bundle for this platform on the connected side"

# An older bundle, however well signed, does not replace a newer one (a replay).
if [[ $STAGE == "$INCOMING" ]]; then
    rc=0
    py "$RECORDER" check "$PREFIX" "$STAGE/manifest.json" "${ALLOW_DOWNGRADE[@]}" || rc=$?
    if ((rc)); then rm -rf "$INCOMING"; exit "$rc"; fi
fi

if [[ $STAGE == "$INCOMING" ]]; then
    if [[ -d $FINAL ]]; then
        rm -rf "$PREFIX/.bundle.old" && mv "$FINAL" "$PREFIX/.bundle.old"
    fi
    mv "$INCOMING" "$FINAL" && rm -rf "$PREFIX/.bundle.old"
    # Recorded at once: if a later step stops, the record still names the bundle in place.
    py "$RECORDER" record "$PREFIX" "$FINAL/manifest.json" --signer "$(der_sha "$PUBKEY")" \
        --partial || die 8 "writing $PREFIX/installed.json failed (disk full?)"
fi
STAGE=$FINAL

# --- 4. environments ------------------------------------------------------------------------
mapfile -t ALL_ENVS < <(manifest_get '"\n".join(e["name"] for e in m["envs"] if e["name"] != "bootstrap")')
if ((${#ENVS[@]} == 0)); then ENVS=("${ALL_ENVS[@]}"); fi
for env in "${ENVS[@]}"; do
    [[ " ${ALL_ENVS[*]} " == *" $env "* ]] ||
        die 3 "the bundle has no env '$env' (it has: ${ALL_ENVS[*]})" "pick one with --env NAME"
done
TOOLKIT_WHEEL=$(manifest_get 'm.get("toolkit_wheel") or ""')
TOOLKIT_ENV=toolkit
[[ " ${ALL_ENVS[*]} " == *" toolkit "* ]] || TOOLKIT_ENV=${ALL_ENVS[0]:-}

# pip sees the bundle and nothing of this host's own configuration: no config file (os.devnull
# makes pip skip them all), no PIP_* variable (an extra index, find-links, a constraints file),
# no PYTHONPATH that could make a package look installed already.
while IFS= read -r var; do
    [[ $var == PIP_* ]] && unset "$var"
done < <(compgen -e)
unset PYTHONPATH PYTHONHOME PYTHONUSERBASE
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONNOUSERSITE=1
PIP_LOCAL=(--no-index --find-links "$FINAL/wheels" --require-hashes)

for env in "${ENVS[@]}"; do
    venv=$PREFIX/envs/$env
    say "env $env: $venv"
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        rm -rf "$venv"
        "$PYTHON" -m venv --without-pip "$venv" || die 9 "creating the venv $venv failed"
    fi
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        pip_wheel=$(compgen -G "$FINAL/wheels/pip-*.whl" | head -n1 || true)
        if [[ -n $pip_wheel && -f $FINAL/locks/bootstrap.lock ]]; then
            "$venv/bin/python" "$pip_wheel/pip" install --quiet "${PIP_LOCAL[@]}" \
                -r "$FINAL/locks/bootstrap.lock" || die 9 "installing pip into $venv failed"
        else
            "$venv/bin/python" -m ensurepip --default-pip >/dev/null 2>&1 ||
                die 9 "the bundle carries no pip and $PYTHON has no ensurepip" \
                    "rebuild the bundle with [bootstrap] requirements (pip), or install python3-venv"
        fi
    fi
    "$venv/bin/python" -m pip install --quiet "${PIP_LOCAL[@]}" -r "$FINAL/locks/$env.lock" ||
        die 9 "pip could not install locks/$env.lock into $venv (see above)"
    if [[ $env == "$TOOLKIT_ENV" && -n $TOOLKIT_WHEEL ]]; then
        "$venv/bin/python" -m pip install --quiet --no-index --no-deps --force-reinstall \
            "$FINAL/$TOOLKIT_WHEEL" || die 9 "installing the toolkit into $venv failed"
    fi
    "$venv/bin/python" -m pip check >"$WORK/pip-check.out" 2>&1 ||
        die 9 "env $env is inconsistent: $(cat "$WORK/pip-check.out")"
    # pip in this env sees the bundle's index and nothing else.
    printf '[global]\nindex-url = file://%s/simple\nno-input = true\ndisable-pip-version-check = true\n' \
        "$FINAL" >"$venv/pip.conf"
    if ! grep -q 'offline settings' "$venv/bin/activate"; then
        printf '\n# offline settings (deepseek-offline)\nset -a; . "%s/etc/offline.env"; set +a\n' \
            "$PREFIX" >>"$venv/bin/activate"
    fi
done

# --- 5. offline settings --------------------------------------------------------------------
say "writing offline settings to $PREFIX/etc"
mkdir -p "$PREFIX/etc"
cat >"$PREFIX/etc/offline.env.tmp" <<EOF
# Offline settings for deepseek-offline and the libraries it drives (systemd EnvironmentFile
# and shell compatible). Nothing here reaches the internet.
HF_HUB_OFFLINE=1
TRANSFORMERS_OFFLINE=1
HF_DATASETS_OFFLINE=1
HF_HUB_DISABLE_TELEMETRY=1
DO_NOT_TRACK=1
DVC_NO_ANALYTICS=1
WANDB_MODE=disabled
PIP_CONFIG_FILE=$PREFIX/etc/pip.conf
DEEPSEEK_OFFLINE_PREFIX=$PREFIX
DEEPSEEK_OFFLINE_BUNDLE=$FINAL
EOF
mv "$PREFIX/etc/offline.env.tmp" "$PREFIX/etc/offline.env"
printf '[global]\nindex-url = file://%s/simple\nno-input = true\ndisable-pip-version-check = true\n' \
    "$FINAL" >"$PREFIX/etc/pip.conf"
cp "$PUBKEY" "$PREFIX/etc/trusted.pub.pem"
if [[ -d $FINAL/models ]]; then ln -sfn bundle/models "$PREFIX/models"; fi

py "$RECORDER" record "$PREFIX" "$FINAL/manifest.json" --signer "$(der_sha "$PUBKEY")" \
    --envs "${ENVS[*]}" || die 8 "writing $PREFIX/installed.json failed (disk full?)"
say "installed $NAME into $PREFIX"
echo "    activate:  source $PREFIX/envs/${ENVS[0]:-toolkit}/bin/activate"

# --- 6. the doctor, once it exists ----------------------------------------------------------
doctor=$PREFIX/envs/$TOOLKIT_ENV/bin/deepseek-doctor
if ((RUN_DOCTOR)) && [[ -n $TOOLKIT_ENV && -x $doctor ]]; then
    say "deepseek-doctor --bundle $FINAL"
    set -a && . "$PREFIX/etc/offline.env" && set +a
    if "$doctor" --bundle "$FINAL"; then
        say "doctor: the host is ready"
    else
        echo "warning: deepseek-doctor reported problems (exit $?); the install itself is complete" >&2
    fi
fi
