# Converts a torch checkpoint and validates the result with the command linked against the
# shared library, then checks that a missing file is reported as the library's io error.
file(REMOVE_RECURSE ${SCRATCH})
file(MAKE_DIRECTORY ${SCRATCH})
execute_process(COMMAND ${CLI} convert ${INPUT} ${SCRATCH}/model.safetensors RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "convert failed (${rc})")
endif()
execute_process(COMMAND ${CLI} validate ${SCRATCH}/model.safetensors RESULT_VARIABLE rc
                OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0 OR NOT out MATCHES "OK \\(28 tensors\\)")
  message(FATAL_ERROR "validate failed (${rc}): ${out}")
endif()
execute_process(COMMAND ${CLI} validate ${SCRATCH}/missing.safetensors RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT "${out}${err}" MATCHES "io: cannot open")
  message(FATAL_ERROR "a missing file gave (${rc}): ${out}${err}")
endif()
