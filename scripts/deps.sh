#!/bin/sh
# Install the Debian packages mproc needs to build and test, if missing.
# As root it runs apt-get itself; otherwise it prints the command to run.
# Usage: scripts/deps.sh [test|bench|fuzz]...
set -eu

want="cmake make gcc pkg-config libsodium-dev libdw-dev"
for what in "$@"; do
    case "$what" in
    test) want="$want libcriterion-dev libopenmpi-dev openmpi-bin" ;;
    bench) want="$want python3 gnuplot-nox g++ libboost-dev libzmq3-dev libtbb-dev libuv1-dev libboost-context-dev apache2-utils" ;;
    fuzz)
        want="$want clang"
        # libFuzzer's runtime comes in a package named after clang's version.
        if command -v clang >/dev/null 2>&1; then
            v=$(clang -dumpversion | cut -d. -f1)
            want="$want libclang-rt-$v-dev"
        fi
        ;;
    esac
done

missing=""
for pkg in $want; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        # A tool may be present without its Debian package (e.g. a python3
        # from elsewhere): count it as present.
        case "$pkg" in
        cmake|make|gcc|g++|python3|clang) command -v "$pkg" >/dev/null 2>&1 && continue ;;
        gnuplot-nox) command -v gnuplot >/dev/null 2>&1 && continue ;;
        esac
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only when an install fails for want of them.
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends $missing >/dev/null
    }
else
    echo "deps: missing packages:$missing" >&2
    echo "deps: run: sudo apt-get install -y$missing" >&2
    exit 1
fi
