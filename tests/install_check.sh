#!/bin/sh
# Install the build into a scratch prefix, then build a user's program
# against it through pkg-config, shared and static, and run both: what an
# outside program compiled with `pkg-config --cflags --libs mproc` sees.
# Usage: install_check.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
prefix="$build/install-check"
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib64/pkgconfig"
export PKG_CONFIG_PATH
want="child exited with 0, value = 3.14159"

cc -std=c11 -Wall -Wextra -Werror "$src/examples/readme_example.c" \
    $(pkg-config --cflags --libs mproc) -o "$prefix/shared_prog"
got=$(LD_LIBRARY_PATH="$(pkg-config --variable=libdir mproc)" "$prefix/shared_prog")
[ "$got" = "$want" ] || { echo "shared: got '$got'"; exit 1; }

cc -std=c11 -Wall -Wextra -Werror "$src/examples/readme_example.c" \
    $(pkg-config --cflags mproc) "$(pkg-config --variable=libdir mproc)/libmproc.a" \
    $(pkg-config --libs-only-l --static mproc | sed 's/-lmproc//') -o "$prefix/static_prog"
got=$("$prefix/static_prog")
[ "$got" = "$want" ] || { echo "static: got '$got'"; exit 1; }

# Every public header compiles on its own, in C and C++.
for h in "$prefix"/include/mproc/*.h "$prefix/include/mproc.h"; do
    printf '#include <%s>\nint main(void) { return 0; }\n' "${h#$prefix/include/}" >"$prefix/h.c"
    cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags mproc) -c "$prefix/h.c" -o "$prefix/h.o"
    if command -v c++ >/dev/null 2>&1; then
        c++ -x c++ -Wall -Wextra -Werror $(pkg-config --cflags mproc) -c "$prefix/h.c" -o "$prefix/h.o"
    fi
done
echo "install check: shared and static programs ran; headers compile alone"
