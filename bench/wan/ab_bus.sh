#!/usr/bin/env bash
# ab.sh with fedbus swapped too: the fedbus, fedschemas and fedgateway packages of git revision
# OLD against this tree's, alternating. For changes to the bus (issue #19, fourth session
# part 2: complete chunk sets handed to the relay's batch handler).
#
#   bench/wan/ab_bus.sh adc9ea6 2 /tmp/wan-ab-bus --points 80:1 --rows gateway --size-mib 1024
set -euo pipefail
AB_SWAP="libs/bus/src schemas/src services/gateway/src" exec "$(dirname "$0")/ab.sh" "$@"
