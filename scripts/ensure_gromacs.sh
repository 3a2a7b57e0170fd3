#!/usr/bin/env bash
# Make sure a GROMACS executable is available; install Debian's package when we can.
# Honors GMX (executable name, default gmx).  Exit 1 with a clear message when we cannot.
set -euo pipefail
GMX="${GMX:-gmx}"
if command -v "$GMX" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "GROMACS ('$GMX') not found: installing Debian's gromacs package with apt-get ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gromacs >/dev/null
  command -v "$GMX" >/dev/null 2>&1 && exit 0
fi
echo "error: GROMACS executable '$GMX' not found on PATH: on a cluster run 'module load gromacs' (or source GMXRC);" \
     "on Debian/Ubuntu run 'sudo apt-get install gromacs'; then re-run this command." >&2
exit 1
