/* target_oracle.h: the invariants of ecw_url_target, shared by the
 * url_target (fuzzed target) and url_base (fuzzed base) harnesses. */
#ifndef ECW_FUZZ_TARGET_ORACLE_H
#define ECW_FUZZ_TARGET_ORACLE_H

#include "../csrc/ecw.h"

/* Call ecw_url_target(base, origin, target) and check the result. */
void target_check (const char *base, const char *origin, const char *target);

#endif
