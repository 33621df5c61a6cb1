// SAFETENSORS_API marks what the library exports. Everything else is built with hidden
// visibility, so a shared libsafetensors exports its public API and nothing internal.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define SAFETENSORS_API __attribute__((visibility("default")))
#else
#define SAFETENSORS_API
#endif
