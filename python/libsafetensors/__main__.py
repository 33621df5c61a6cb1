"""`python -m libsafetensors ARGS...` runs the `safetensors` command with ARGS.

The command is a native program that `pip install` puts in the environment's scripts directory
(beside this interpreter in a venv); it is looked for there first, then on PATH.
"""

import os
import shutil
import sys
import sysconfig

COMMAND = "safetensors"


def find_command():
    """The path of the installed `safetensors` program, or None."""
    places = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    for place in places:
        candidate = os.path.join(place, COMMAND)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(COMMAND)


def main():
    command = find_command()
    if command is None:
        sys.exit(f"libsafetensors: the `{COMMAND}` command is not installed beside this Python "
                 f"({sysconfig.get_path('scripts')}) nor on PATH; `pip install` the package or "
                 "build it with CMake")
    os.execv(command, [command, *sys.argv[1:]])


if __name__ == "__main__":
    main()
