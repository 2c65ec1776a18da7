// Host-only: the extension's switches read from the environment (csrc/ops/checks.cpp).
#pragma once

namespace pnerf {

// The environment variable `name` as a switch: "1", "true" or "yes" turn it on, "0",
// "off" or "false" turn it off, anything else (or unset) leaves `default_on`. Read by
// each switch once, on first use: PNERF_DEBUG_CHECKS (default off), PNERF_HUGEPAGES and
// PNERF_SIMD (default on).
bool env_switch(const char* name, bool default_on);

}  // namespace pnerf
