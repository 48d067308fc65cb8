#!/bin/sh
# A CNI-style "bridge" ADD for runc, as an OCI createRuntime hook: what a CNI
# bridge plugin does for a container, in iproute2 commands, so that
# bench/start_latency.py's runc-cni row compares runc + this with
# `terrarium run --network bridge` (a veth pair, eth0 addressed in the
# container's namespace, a default route through the bridge).
#
#   cni_veth.sh BRIDGE HOST_END ADDRESS/PREFIX GATEWAY MTU   (state JSON on stdin)
#
# runc runs it after making the container's namespaces and before the
# command starts, with the OCI state ({"pid": N, ...}) on stdin.  It makes the
# pair with its container end straight in that namespace as eth0 (as
# runtime/network.py does), puts the host end on BRIDGE (made by the bench),
# and addresses eth0, brings it up and adds the route from inside (nsenter,
# as a CNI plugin enters the namespace).  Nothing to undo: the namespace dies
# with the container and takes the pair with it; the bench removes the bridge
# and checks that no HOST_END is left.
set -eu
bridge=$1 host_end=$2 address=$3 gateway=$4 mtu=$5
pid=$(tr -d ' \n' | sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p')
[ -n "$pid" ] || { echo "cni_veth.sh: no pid in the state on stdin" >&2; exit 1; }
ip -batch - <<EOF
link add $host_end mtu $mtu type veth peer name eth0 mtu $mtu netns $pid
link set $host_end master $bridge up
EOF
nsenter --net=/proc/$pid/ns/net ip -batch - <<EOF
addr add $address dev eth0
link set eth0 up
route add default via $gateway
EOF
