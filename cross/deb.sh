#!/usr/bin/env bash
# Builds the Debian packages for a board from cross/build.sh's output (run that first):
#
#   target/cross/edge-agent_VERSION_ARCH.deb    the agent, its systemd unit, /etc/edgefleet/agent.toml
#                                               (conffile), /usr/share/edgefleet/sideload/; state in
#                                               /var/lib/edgefleet (systemd DynamicUser + StateDirectory)
#   target/cross/libedgefleet-dev_VERSION_ARCH.deb   the SDK: libedgefleet.so/.a, edge_runtime.h,
#                                               the C example's source
#
#   cross/deb.sh aarch64-unknown-linux-gnu   (→ arm64)    cross/deb.sh armv7-unknown-linux-gnueabihf (→ armhf)
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/env.sh "${1:-}"
in=target/cross/$TARGET
[ -x "$in/edge-agent" ] || { echo "run cross/build.sh $TARGET first" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
multiarch=$(basename "$SYSROOT")   # aarch64-linux-gnu, arm-linux-gnueabihf
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# --- edge-agent ---
a=$work/agent
install -D -m 0755 "$in/edge-agent" "$a/usr/bin/edge-agent"
install -D -m 0644 cross/package/edge-agent.service "$a/lib/systemd/system/edge-agent.service"
install -D -m 0644 cross/package/agent.toml "$a/etc/edgefleet/agent.toml"
install -d -m 0755 "$a/usr/share/edgefleet/sideload"
install -D -m 0644 docs/flashing.md "$a/usr/share/doc/edge-agent/flashing.md"
install -d "$a/DEBIAN"
cat > "$a/DEBIAN/control" <<CONTROL
Package: edge-agent
Version: $version
Architecture: $DEB_ARCH
Maintainer: edgefleet <dev@example.invalid>
Section: net
Priority: optional
Depends: libc6 (>= $GLIBC_FLOOR), adduser
Installed-Size: $(du -sk "$a" | cut -f1)
Homepage: https://example.invalid/edgefleet
Description: edgefleet device agent: signed model OTA and local inference
 Follows an edgefleet fleet server: installs signed, self-tested model bundles into A/B
 slots, watches each new model on live signals and rolls it back when it is unhealthy,
 serves models to apps over a local HTTP API, feeds I2C sensors to models, and keeps
 telemetry in a durable outbox while offline.
CONTROL
echo /etc/edgefleet/agent.toml > "$a/DEBIAN/conffiles"
cat > "$a/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # the unit's SupplementaryGroups (I2C device nodes); Raspberry Pi OS and JetPack have it
  getent group i2c >/dev/null || addgroup --system i2c
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable edge-agent.service >/dev/null
    # starts only once /etc/edgefleet/trust.cbor exists (ConditionPathExists)
    systemctl restart edge-agent.service || true
  fi
fi
POSTINST
cat > "$a/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop edge-agent.service || true
  systemctl disable edge-agent.service >/dev/null || true
fi
PRERM
cat > "$a/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf /var/lib/edgefleet /var/lib/private/edgefleet
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
chmod 0755 "$a/DEBIAN/postinst" "$a/DEBIAN/prerm" "$a/DEBIAN/postrm"
agent_deb=target/cross/edge-agent_${version}_$DEB_ARCH.deb
dpkg-deb --root-owner-group -Zgzip --build "$a" "$agent_deb" >/dev/null

# --- libedgefleet-dev ---
s=$work/sdk
install -D -m 0644 "$in/libedgefleet.so" "$s/usr/lib/$multiarch/libedgefleet.so"
install -D -m 0644 "$in/libedgefleet.a" "$s/usr/lib/$multiarch/libedgefleet.a"
install -D -m 0644 runtime/include/edge_runtime.h "$s/usr/include/edge_runtime.h"
install -D -m 0644 examples/c/predict.c "$s/usr/share/doc/libedgefleet-dev/examples/predict.c"
install -d "$s/DEBIAN"
cat > "$s/DEBIAN/control" <<CONTROL
Package: libedgefleet-dev
Version: $version
Architecture: $DEB_ARCH
Maintainer: edgefleet <dev@example.invalid>
Section: libdevel
Priority: optional
Depends: libc6 (>= $GLIBC_FLOOR)
Installed-Size: $(du -sk "$s" | cut -f1)
Homepage: https://example.invalid/edgefleet
Description: edgefleet runtime SDK for C: verify signed model bundles and run them
 libedgefleet.so / libedgefleet.a and edge_runtime.h: load a bundle against a fleet
 trust root, predict from the caller's buffer, read the answer and the model's counters.
CONTROL
sdk_deb=target/cross/libedgefleet-dev_${version}_$DEB_ARCH.deb
dpkg-deb --root-owner-group -Zgzip --build "$s" "$sdk_deb" >/dev/null

# The unit: systemd's own checks (syntax, keys, sections; ExecStart pointed at a host binary so the
# check does not fail on the foreign one) and its exposure score.
if command -v systemd-analyze >/dev/null; then
  sed "s|^ExecStart=/usr/bin/edge-agent|ExecStart=$(command -v true)|" cross/package/edge-agent.service \
    > "$work/edge-agent.service"
  if ! out=$(systemd-analyze verify "$work/edge-agent.service" 2>&1) || [ -n "$out" ]; then
    echo "systemd-analyze verify edge-agent.service: ${out:-failed}" >&2
    exit 1
  fi
  root=$work/root; mkdir -p "$root/lib/systemd/system"; cp cross/package/edge-agent.service "$root/lib/systemd/system/"
  systemd-analyze security --offline=yes --root="$root" edge-agent.service 2>/dev/null \
    | grep -o 'Overall exposure level.*' || true
fi

# What a board gets: the files, and binaries for its architecture.
dpkg-deb -x "$agent_deb" "$work/check"
for f in usr/bin/edge-agent lib/systemd/system/edge-agent.service etc/edgefleet/agent.toml; do
  [ -e "$work/check/$f" ] || { echo "$agent_deb lacks /$f" >&2; exit 1; }
done
file -b "$work/check/usr/bin/edge-agent" | grep -Eq 'ARM aarch64|ARM, EABI5' \
  || { echo "$agent_deb: edge-agent is not an ARM binary" >&2; exit 1; }
dpkg-deb -c "$sdk_deb" > "$work/sdk-contents"
grep -q "usr/include/edge_runtime.h" "$work/sdk-contents" || { echo "$sdk_deb lacks the header" >&2; exit 1; }

for deb in "$agent_deb" "$sdk_deb"; do
  echo "$deb ($(stat -c %s "$deb") bytes)"
  dpkg-deb --field "$deb" Package Version Architecture | sed 's/^/  /'
done
