/* Error codes: every code has its own name and message. */
// labels: unit tsan
#include <mproc.h>

#include "mp_test.h"

static const int lib_codes[] = {
    MP_ETIMEDOUT, MP_EEMPTY, MP_EFULL, MP_ECLOSED, MP_EOWNERDEAD, MP_EWORKER,
    MP_EDEADLINE, MP_EBROKEN, MP_ECANCELED, MP_ETOOBIG, MP_EAUTH, MP_ETASK,
    MP_EDONE};
#define NCODES (sizeof lib_codes / sizeof lib_codes[0])

Test(error, codes_are_negative_and_outside_errno_range, .timeout = MP_TMO(5))
{
    for (size_t i = 0; i < NCODES; i++) {
        cr_assert_lt(lib_codes[i], 0);
        if (lib_codes[i] != MP_ETIMEDOUT)
            cr_assert_lt(lib_codes[i], -4095, "code %d inside errno range", lib_codes[i]);
    }
    cr_assert_eq(MP_ETIMEDOUT, -ETIMEDOUT);
}

Test(error, every_code_has_a_distinct_name_and_message, .timeout = MP_TMO(5))
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *ni = mp_errname(lib_codes[i]), *si = mp_strerror(lib_codes[i]);
        cr_assert_str_neq(ni, "UNKNOWN");
        cr_assert_str_neq(si, "unknown error");
        cr_assert_eq(strncmp(ni, "MP_E", 4), 0, "%s", ni);
        for (size_t j = 0; j < i; j++) {
            cr_assert_str_neq(ni, mp_errname(lib_codes[j]));
            cr_assert_str_neq(si, mp_strerror(lib_codes[j]));
        }
    }
}

Test(error, errno_values_are_described, .timeout = MP_TMO(5))
{
    cr_assert_str_eq(mp_errname(-EINVAL), "EINVAL");
    cr_assert_str_eq(mp_strerror(-ENOMEM), "Cannot allocate memory");
    cr_assert_str_eq(mp_errname(0), "OK");
    cr_assert_str_eq(mp_strerror(0), "success");
}

Test(error, unknown_codes_never_return_null, .timeout = MP_TMO(5))
{
    const int odd[] = {1, 12345, -4096, -5000, -99999, INT32_MIN};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        cr_assert_not_null(mp_strerror(odd[i]));
        cr_assert_str_eq(mp_errname(odd[i]), "UNKNOWN");
    }
}

Test(error, version_is_defined, .timeout = MP_TMO(5))
{
    cr_assert_str_eq(MP_VERSION, "0.1.0");
    cr_assert_eq(MP_VERSION_NUM, 100);
}
