#!/bin/sh
# Install the build into a scratch prefix, then build a user's program
# against it the ways the README says (pkg-config, shared and static, the
# CMake package) and run each: what an outside program sees.  Also: the
# libmproc.so of the install does not depend on libmpi, and mproc.pc holds
# no absolute path of the build host.
# Usage: install_check.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$(cd "$2" && pwd)
prefix="$(cd "$build" && pwd)/install-check"
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib64/pkgconfig"
export PKG_CONFIG_PATH
libdir=$(pkg-config --variable=libdir mproc)
want="child exited with 0, value = 3.14159"
fail() { echo "install check: $*"; exit 1; }

cc -std=c11 -Wall -Wextra -Werror "$src/examples/readme_example.c" \
    $(pkg-config --cflags --libs mproc) -o "$prefix/shared_prog"
got=$(LD_LIBRARY_PATH="$libdir" "$prefix/shared_prog")
[ "$got" = "$want" ] || fail "shared: got '$got'"

# The README's static line, for a program that uses a pool's map too.
cat >"$prefix/map.c" <<'EOF'
#include <mproc.h>
#include <stdio.h>
static int twice(const void *in, void *out) { *(int *)out = 2 * *(const int *)in; return 0; }
int main(void)
{
    mp_pool *p;
    int in[100], out[100], bad = 0;
    for (int i = 0; i < 100; i++)
        in[i] = i;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = MP_POOL_FLAGS_KIND});
    if (rc == 0)
        rc = mp_pool_map(p, twice, in, 100, sizeof(int), out, sizeof(int), 0);
    for (int i = 0; rc == 0 && i < 100; i++)
        bad |= out[i] != 2 * i;
    mp_pool_free(p);
    printf("map %s\n", rc == 0 && !bad ? "ok" : mp_strerror(rc));
    return rc != 0 || bad;
}
EOF
sed 's/MP_POOL_FLAGS_KIND/MP_POOL_PROCESS/' "$prefix/map.c" >"$prefix/map_process.c"
cc -std=c11 -Wall -Wextra -Werror "$prefix/map_process.c" $(pkg-config --cflags mproc) \
    "$libdir/libmproc.a" -lsodium -lpthread -lm -o "$prefix/static_map"
[ "$("$prefix/static_map")" = "map ok" ] || fail "static map"

cc -std=c11 -Wall -Wextra -Werror "$src/examples/readme_example.c" \
    $(pkg-config --cflags mproc) "$libdir/libmproc.a" \
    $(pkg-config --libs-only-l --static mproc | sed 's/-lmproc//') -o "$prefix/static_prog"
got=$("$prefix/static_prog")
[ "$got" = "$want" ] || fail "static: got '$got'"

# libmproc never links MPI; its pkg-config file names no host path.
if ldd "$libdir/libmproc.so" | grep -q libmpi; then
    fail "libmproc.so depends on libmpi"
fi
if grep -E '^(Libs|Libs.private|Cflags):' "$libdir/pkgconfig/mproc.pc" | grep -q ' /'; then
    fail "mproc.pc holds an absolute path"
fi

# MPI pools: linked through mproc-mpi.pc, and outside mpirun falling back
# to a process pool (the module is loaded, MPI says it is not in a job).
if pkg-config --exists mproc-mpi; then
    sed 's/MP_POOL_FLAGS_KIND/MP_POOL_MPI, .flags = MP_POOL_FALLBACK/' "$prefix/map.c" \
        >"$prefix/map_mpi.c"
    # (--as-needed, as some distributions link by default: the module must
    # stay linked though nothing of the program names it.)
    cc -std=c11 -Wall -Wextra -Werror -Wl,--as-needed "$prefix/map_mpi.c" \
        $(pkg-config --cflags --libs mproc-mpi) -o "$prefix/mpi_prog"
    ldd "$prefix/mpi_prog" | grep -q libmproc-mpi || fail "mpi: libmproc-mpi not linked"
    [ "$(LD_LIBRARY_PATH="$libdir" "$prefix/mpi_prog")" = "map ok" ] || fail "mpi: shared"
    # Linking only libmproc.so: the module is loaded on demand.
    cc -std=c11 -Wall -Wextra -Werror "$prefix/map_mpi.c" $(pkg-config --cflags --libs mproc) \
        -o "$prefix/mpi_dlopen"
    [ "$(LD_LIBRARY_PATH="$libdir" "$prefix/mpi_dlopen")" = "map ok" ] || fail "mpi: dlopen"
    # The README's static line for MPI pools.
    cc -std=c11 -Wall -Wextra -Werror "$prefix/map_mpi.c" $(pkg-config --cflags mproc-mpi) \
        -Wl,-u,mp__mpi_module_get "$libdir/libmproc-mpi.a" "$libdir/libmproc.a" \
        -lsodium -lpthread -lm -lmpi -o "$prefix/mpi_static"
    [ "$("$prefix/mpi_static")" = "map ok" ] || fail "mpi: static"
fi

# The CMake package.
mkdir -p "$prefix/cmake-user"
cat >"$prefix/cmake-user/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(user C)
find_package(mproc REQUIRED)
add_executable(readme "$src/examples/readme_example.c")
target_link_libraries(readme PRIVATE mproc::mproc)
add_executable(readme_static "$src/examples/readme_example.c")
target_link_libraries(readme_static PRIVATE mproc::static)
if(TARGET mproc::mpi)
  add_executable(map_mpi "$prefix/map_mpi.c")
  target_link_libraries(map_mpi PRIVATE mproc::mpi)
endif()
EOF
cmake -S "$prefix/cmake-user" -B "$prefix/cmake-user/build" -DCMAKE_PREFIX_PATH="$prefix" \
    >"$prefix/cmake-user.log" 2>&1 || { cat "$prefix/cmake-user.log"; fail "cmake package"; }
cmake --build "$prefix/cmake-user/build" >>"$prefix/cmake-user.log" 2>&1 ||
    { cat "$prefix/cmake-user.log"; fail "cmake package build"; }
[ "$(LD_LIBRARY_PATH="$libdir" "$prefix/cmake-user/build/readme")" = "$want" ] || fail "cmake: shared"
[ "$("$prefix/cmake-user/build/readme_static")" = "$want" ] || fail "cmake: static"
if [ -x "$prefix/cmake-user/build/map_mpi" ]; then
    [ "$(LD_LIBRARY_PATH="$libdir" "$prefix/cmake-user/build/map_mpi")" = "map ok" ] ||
        fail "cmake: mpi"
fi

# Every public header compiles on its own, in C and C++.
for h in "$prefix"/include/mproc/*.h "$prefix/include/mproc.h"; do
    printf '#include <%s>\nint main(void) { return 0; }\n' "${h#$prefix/include/}" >"$prefix/h.c"
    cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags mproc) -c "$prefix/h.c" -o "$prefix/h.o"
    if command -v c++ >/dev/null 2>&1; then
        c++ -x c++ -Wall -Wextra -Werror $(pkg-config --cflags mproc) -c "$prefix/h.c" -o "$prefix/h.o"
    fi
done
echo "install check: shared, static, MPI and CMake-package programs ran; headers compile alone"
