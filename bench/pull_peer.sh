#!/bin/sh
# The peer `bench/registry_bench.py` times `terrarium pull` against: what a
# runtime without a daemon does to get a registry image ready to run, with
# the tools Debian ships (no CNI, no daemon):
#   1. skopeo copy: download every blob of the image (in parallel), verify
#      each digest, write them as they are into an OCI layout;
#   2. umoci raw unpack: un-gzip and apply every layer, in order, into one
#      root filesystem (whiteouts applied; no runtime config, no mtree).
#
#     bench/pull_peer.sh 127.0.0.1:5000/bench/img:1 /tmp/emptied-dir
#
# Plain HTTP to the registry (`--src-tls-verify=false`), as the bench's
# registry on 127.0.0.1 speaks.  The dir must not hold a previous run.
set -eu
ref=$1
dir=$2
skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$dir/oci:img"
umoci --log error raw unpack --image "$dir/oci:img" "$dir/rootfs"
