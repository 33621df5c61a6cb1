// The device cast kernels as nvcc compiled them (a fatbin: cubins for the architectures the
// build's nvcc supports among sm_80, sm_90, sm_100 and sm_120, plus compute_80 PTX that the
// driver compiles for newer GPUs), embedded by the build (cmake/embed_file.cmake in
// src/CMakeLists.txt). Built without nvcc, the image is empty and
// device_cast_image_missing says so.
#pragma once

#include <cstddef>

namespace safetensors::detail {

extern const unsigned char device_cast_image_bytes[];
extern const std::size_t device_cast_image_size;  // 0: no image
/// Empty when there is an image; else why not, one sentence.
extern const char* const device_cast_image_missing;

}  // namespace safetensors::detail
