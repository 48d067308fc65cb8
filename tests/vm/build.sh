#!/usr/bin/env bash
# Build (or find in the cache) the kernel and initramfs of the cgroup v2 VM tier.
#
#   tests/vm/build.sh [CACHE_DIR]      # default /var/cache/terrarium-vm
#
# On success prints two lines:  KERNEL=<path>  and  INITRD=<path>.
# Exit 0 ok; 3 when the kernel cannot be had (no apt / download failed): the
# caller skips the tier; anything else is a real failure.
#
# Kernel: Debian's linux-image-amd64 dependency (6.1.0-N-amd64), fetched with
# `apt-get download` into the cache and unpacked with dpkg -x (only while
# building). Initramfs: static busybox + tests/vm/init + the virtio/9p/overlay
# modules (and whatever they depend on, read from each module's depends=),
# cached as initramfs-<kver>-<hash of init, modules, busybox>.cpio.gz.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
cache=${1:-${TERRARIUM_VM_CACHE:-/var/cache/terrarium-vm}}
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         netfs fscache 9pnet 9pnet_virtio 9p overlay ${TERRARIUM_VM_EXTRA_MODULES:-})

say() { echo "vm-build: $*" >&2; }
nokernel() { say "cannot get the kernel: $*"; exit 3; }

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 600 9 || { say "cache $cache is locked by another build"; exit 1; }

# --- which kernel -------------------------------------------------------------
kpkg=
if command -v apt-cache >/dev/null 2>&1; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
           | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
fi
if [ -z "$kpkg" ]; then
    # No package lists: use the newest kernel already in the cache, if any.
    kpkg=$(ls -1 "$cache" 2>/dev/null | sed -n 's/^\(linux-image-[0-9].*-amd64\)_.*\.deb$/\1/p' \
           | sort -V | tail -n 1)
fi
[ -n "$kpkg" ] || nokernel "apt-cache knows no linux-image-amd64 and the cache $cache has no kernel"
kver=${kpkg#linux-image-}

deb=$(ls -1 "$cache/${kpkg}"_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$deb" ]; then
    command -v apt-get >/dev/null 2>&1 || nokernel "no apt-get to download $kpkg"
    say "downloading $kpkg into $cache"
    if ! (cd "$cache" && apt-get download -q "$kpkg" >/dev/null 2>&1); then
        say "apt-get download failed; apt-get update and retry"
        apt-get update -qq >/dev/null 2>&1 || true
        if ! (cd "$cache" && apt-get download -q "$kpkg" >/dev/null 2>&1); then
            # Offline with an older kernel cached: better that than nothing.
            old=$(ls -1 "$cache"/linux-image-*-amd64_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
            [ -n "$old" ] || nokernel "apt-get download $kpkg failed"
            say "apt-get download $kpkg failed; using the cached $(basename "$old")"
            kpkg=$(basename "$old"); kpkg=${kpkg%%_*}; kver=${kpkg#linux-image-}
        fi
    fi
    deb=$(ls -1 "$cache/${kpkg}"_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$deb" ] || nokernel "apt-get download $kpkg left no .deb in $cache"
fi

# --- static busybox ----------------------------------------------------------
busybox=${TERRARIUM_VM_BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { say "no busybox at $busybox (apt-get install busybox-static)"; exit 1; }
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q 'statically linked'; then
    say "$busybox is not statically linked (apt-get install busybox-static)"; exit 1
fi
command -v cpio >/dev/null 2>&1 || { say "cpio is missing (apt-get install cpio)"; exit 1; }

# --- cached? -------------------------------------------------------------------
kdir=$cache/$kver
hash=$( { cat "$here/init"; echo "${modules[*]}"; sha256sum < "$busybox"; basename "$deb"; } \
        | sha256sum | cut -c1-16)
initrd=$kdir/initramfs-$kver-$hash.cpio.gz
kernel=$kdir/vmlinuz-$kver
if [ -s "$kernel" ] && [ -s "$initrd" ]; then
    echo "KERNEL=$kernel"
    echo "INITRD=$initrd"
    exit 0
fi

# --- build ---------------------------------------------------------------------
work=$(mktemp -d -t terrarium-vm-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
say "building initramfs for $kver (once per kernel and init script)"
dpkg -x "$deb" "$work/x"
mdir=$work/x/lib/modules/$kver
[ -d "$mdir" ] || { say "$deb has no lib/modules/$kver"; exit 1; }

modfile() {  # modfile NAME -> path of NAME.ko[.xz|.zst] in the package
    local n=$1 f
    f=$(find "$mdir" \( -name "$n.ko" -o -name "$n.ko.xz" -o -name "$n.ko.zst" \) | head -n 1)
    if [ -z "$f" ]; then  # modules may spell - as _
        f=$(find "$mdir" \( -name "${n//_/-}.ko" -o -name "${n//_/-}.ko.xz" -o -name "${n//_/-}.ko.zst" \) | head -n 1)
    fi
    echo "$f"
}
unpack() {  # unpack SRC DST : decompressed copy of a module
    case "$1" in
        *.xz) xz -dc "$1" > "$2" ;;
        *.zst) zstd -qdc "$1" > "$2" ;;
        *) cp "$1" "$2" ;;
    esac
}

root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,lib/modules,lower,rw,newroot}
cp "$busybox" "$root/bin/busybox"
install -m 0755 "$here/init" "$root/init"

declare -A loaded=()
order=()
add() {  # add NAME: its dependencies first, then itself
    local n=$1 f deps d
    [ -n "${loaded[$n]:-}" ] && return 0
    loaded[$n]=1
    f=$(modfile "$n")
    if [ -z "$f" ]; then
        # Built into this kernel?
        if grep -q "/$n.ko\$" "$mdir/modules.builtin" 2>/dev/null; then return 0; fi
        say "module $n not found in $deb"; exit 1
    fi
    unpack "$f" "$root/lib/modules/$n.ko"
    deps=$(tr '\0' '\n' < "$root/lib/modules/$n.ko" | sed -n 's/^depends=//p' | head -n 1)
    for d in ${deps//,/ }; do add "$d"; done
    order+=("$n")
}
for m in "${modules[@]}"; do add "$m"; done
printf '%s\n' "${order[@]}" > "$root/modules.order"

mkdir -p "$kdir"
cp "$work/x/boot/vmlinuz-$kver" "$kdir/.vmlinuz.tmp" && mv -f "$kdir/.vmlinuz.tmp" "$kernel"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$kdir/.initrd.tmp"
mv -f "$kdir/.initrd.tmp" "$initrd"
# Older initramfs builds for this kernel, and older kernels, are stale now.
find "$kdir" -maxdepth 1 -name "initramfs-$kver-*.cpio.gz" ! -path "$initrd" -delete
for old in "$cache"/linux-image-*.deb "$cache"/*-amd64; do
    case "$old" in "$deb"|"$kdir") continue ;; esac
    [ -e "$old" ] && { say "pruning old kernel $old"; rm -rf -- "$old"; }
done
say "modules: ${order[*]}"
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
