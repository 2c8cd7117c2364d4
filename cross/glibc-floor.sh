#!/usr/bin/env bash
# Prints the highest GLIBC_x.y symbol version FILE needs, and fails if it is above FLOOR.
#   cross/glibc-floor.sh FILE [FLOOR=2.28]
set -euo pipefail
file=$1; floor=${2:-2.28}
needed=$(readelf -V --wide "$file" | grep -o 'GLIBC_[0-9.]*[0-9]' | sed 's/GLIBC_//' | sort -uV | tail -1)
needed=${needed:-none}
echo "$file: needs glibc $needed (floor $floor)"
if [ "$needed" != none ] && [ "$(printf '%s\n%s\n' "$floor" "$needed" | sort -V | tail -1)" != "$floor" ]; then
  echo "$file needs glibc $needed, above the supported floor $floor" >&2
  exit 1
fi
