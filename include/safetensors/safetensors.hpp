// Umbrella include: the whole public C++ API of libsafetensors.
#pragma once

#include "safetensors/atomic_file.hpp"
#include "safetensors/cast.hpp"
#include "safetensors/checkpoint.hpp"
#include "safetensors/convert.hpp"
#include "safetensors/dtype.hpp"
#include "safetensors/error.hpp"
#include "safetensors/file.hpp"
#include "safetensors/header.hpp"
#include "safetensors/loader.hpp"
#include "safetensors/parallel.hpp"
#include "safetensors/scan.hpp"
#include "safetensors/slice.hpp"
#include "safetensors/source.hpp"
#include "safetensors/values.hpp"
#include "safetensors/version.hpp"
#include "safetensors/writer.hpp"
