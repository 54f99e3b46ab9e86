#!/usr/bin/env bash
# Shows, and with --apply sets, where a node's NIC interrupts (IRQ affinity)
# and receive packet steering (RPS) run, so that NIC queue work uses the
# cores NOT given to sluice's workers. Dry run by default: it prints the
# current state and the writes it would make.
#
#   tuning/irq-affinity.sh                          # show all NICs; sluice CPUs from a running sluice
#   tuning/irq-affinity.sh --sluice-cpus 2-7        # plan: NIC work on every other online CPU
#   tuning/irq-affinity.sh --iface eth0 --sluice-cpus 2-7 --nic-cpus 0-1 --apply
#
# Options:
#   --iface IF         a NIC to handle (repeatable; default: every interface
#                      with a device behind it, i.e. not lo/veth/bridges)
#   --sluice-cpus LIST CPUs the sluice workers run on (e.g. "2-7"; default:
#                      Cpus_allowed_list of the running `sluice` process)
#   --nic-cpus LIST    CPUs for NIC IRQs and RPS (default: online CPUs minus
#                      --sluice-cpus)
#   --no-rps           leave rps_cpus alone
#   --apply            write the settings (needs root); without it, dry run
#
# The writes do not survive a reboot, and irqbalance rewrites IRQ affinity
# every 10 s: stop it (systemctl disable --now irqbalance) or ban the NIC
# CPUs from it (IRQBALANCE_BANNED_CPULIST) before --apply. See
# tuning/README.md.
set -euo pipefail
shopt -s extglob

ifaces=()
sluice_cpus=""
nic_cpus=""
apply=0
rps=1

die() { echo "irq-affinity: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --iface) [[ $# -ge 2 ]] || die "--iface needs a value"; ifaces+=("$2"); shift 2 ;;
        --sluice-cpus) [[ $# -ge 2 ]] || die "--sluice-cpus needs a value"; sluice_cpus=$2; shift 2 ;;
        --nic-cpus) [[ $# -ge 2 ]] || die "--nic-cpus needs a value"; nic_cpus=$2; shift 2 ;;
        --no-rps) rps=0; shift ;;
        --apply) apply=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# "0-3,8,10-11" -> "0 1 2 3 8 10 11"
expand_list() {
    local list=$1 part lo hi c
    local -a parts cpus=()
    [[ -n $list ]] || { echo ""; return; }
    IFS=, read -r -a parts <<< "$list"
    for part in "${parts[@]}"; do
        [[ $part =~ ^([0-9]+)(-([0-9]+))?$ ]] || die "bad CPU list: $list"
        lo=${BASH_REMATCH[1]}
        hi=${BASH_REMATCH[3]:-$lo}
        for ((c = lo; c <= hi; c++)); do cpus+=("$c"); done
    done
    echo "${cpus[*]}"
}

# "0 1 2 3" -> "0-3" (for display and smp_affinity_list)
compress_list() {
    local text="" start="" prev="" c
    for c in $1; do
        if [[ -z $start ]]; then start=$c; prev=$c; continue; fi
        if ((c == prev + 1)); then prev=$c; continue; fi
        text+="${text:+,}$start"
        [[ $start != "$prev" ]] && text+="-$prev"
        start=$c; prev=$c
    done
    if [[ -n $start ]]; then
        text+="${text:+,}$start"
        [[ $start != "$prev" ]] && text+="-$prev"
    fi
    echo "$text"
}

# "0 1 33" -> hex mask in the kernel's comma-separated 32-bit words
cpu_mask() {
    local c max=0 words i word hex=""
    for c in $1; do ((c > max)) && max=$c; done
    words=$((max / 32 + 1))
    local -a w
    for ((i = 0; i < words; i++)); do w[i]=0; done
    for c in $1; do w[c / 32]=$((w[c / 32] | (1 << (c % 32)))); done
    for ((i = words - 1; i >= 0; i--)); do
        printf -v word '%08x' "${w[i]}"
        hex+="${hex:+,}$word"
    done
    echo "$hex"
}

strip_mask() {
    local m=${1//,/}
    m=${m##+(0)}
    echo "${m:-0}"
}

online=$(expand_list "$(cat /sys/devices/system/cpu/online)")

if [[ -z $sluice_cpus ]]; then
    pid=$(pgrep -x sluice | head -n1 || true)
    if [[ -n $pid ]]; then
        sluice_cpus=$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$pid/status")
        echo "# sluice CPUs from running sluice (pid $pid): $sluice_cpus"
    fi
fi
sluice_set=$(expand_list "$sluice_cpus")

plan=1
if [[ -z $nic_cpus && -z $sluice_set ]]; then
    # Nothing to keep NIC work away from: show only.
    plan=0
    nic_set=""
elif [[ -z $nic_cpus ]]; then
    nic_set=""
    for c in $online; do
        [[ " $sluice_set " == *" $c "* ]] || nic_set+="${nic_set:+ }$c"
    done
else
    nic_set=$(expand_list "$nic_cpus")
fi

echo "# online CPUs:  $(compress_list "$online")"
echo "# sluice CPUs:  ${sluice_cpus:-(unknown: pass --sluice-cpus)}"
echo "# NIC CPUs:     $(compress_list "$nic_set")"
if [[ -n $sluice_set && -z $nic_set ]]; then
    echo "# every online CPU is given to sluice: nothing left for NIC work;" \
        "give sluice fewer cores (server.workers, taskset) or pass --nic-cpus" >&2
fi
for c in $nic_set; do
    [[ " $sluice_set " == *" $c "* ]] && echo "# warning: NIC CPU $c is also a sluice CPU" >&2
done
if pgrep -x irqbalance >/dev/null 2>&1; then
    echo "# warning: irqbalance is running and will rewrite IRQ affinity; stop it or ban the NIC CPUs" >&2
fi

if [[ ${#ifaces[@]} -eq 0 ]]; then
    for d in /sys/class/net/*; do
        [[ -e $d/device ]] && ifaces+=("$(basename "$d")")
    done
fi
[[ ${#ifaces[@]} -gt 0 ]] || die "no NIC with a device found (pass --iface)"

# The IRQs of a NIC: its PCI device's MSI vectors (also for virtio, whose
# net device hangs below the PCI device), else /proc/interrupts by name.
nic_irqs() {
    local ifc=$1 dev d v
    dev=$(readlink -f "/sys/class/net/$ifc/device" 2>/dev/null || true)
    for d in "$dev" "$dev/.."; do
        if [[ -n $dev && -d $d/msi_irqs ]]; then
            for v in "$d"/msi_irqs/*; do basename "$v"; done | sort -n
            return
        fi
    done
    awk -v ifc="$ifc" '$NF ~ ifc { sub(":", "", $1); print $1 }' /proc/interrupts
}

irq_name() {
    awk -v irq="$1:" '$1 == irq { print $NF }' /proc/interrupts
}

do_write() {
    local value=$1 path=$2
    if ((apply)); then
        if echo "$value" > "$path" 2>/dev/null; then
            echo "  wrote $value > $path"
        else
            echo "  FAILED $value > $path (root? managed IRQ?)" >&2
            failures=$((failures + 1))
        fi
    else
        echo "  would run: echo $value > $path"
    fi
}

failures=0
read -r -a nic_arr <<< "$nic_set"
for ifc in "${ifaces[@]}"; do
    [[ -d /sys/class/net/$ifc ]] || die "no such interface: $ifc"
    echo
    echo "== $ifc"
    mapfile -t irqs < <(nic_irqs "$ifc")
    if [[ ${#irqs[@]} -eq 0 ]]; then
        echo "  no IRQs found for $ifc"
    fi
    i=0
    for irq in "${irqs[@]}"; do
        f=/proc/irq/$irq/smp_affinity_list
        [[ -r $f ]] || continue
        cur=$(cat "$f")
        eff=$(cat "/proc/irq/$irq/effective_affinity_list" 2>/dev/null || echo "?")
        printf '  irq %-5s %-28s affinity %-10s effective %s\n' "$irq" "$(irq_name "$irq")" "$cur" "$eff"
        if ((plan)) && [[ ${#nic_arr[@]} -gt 0 ]]; then
            # One queue IRQ per NIC CPU, round robin.
            want=${nic_arr[i % ${#nic_arr[@]}]}
            i=$((i + 1))
            [[ $cur == "$want" ]] || do_write "$want" "$f"
        fi
    done
    mask=""
    ((plan)) && [[ -n $nic_set ]] && mask=$(cpu_mask "$nic_set")
    for q in /sys/class/net/"$ifc"/queues/rx-*; do
        [[ -e $q/rps_cpus ]] || continue
        cur=$(cat "$q/rps_cpus")
        printf '  %-8s rps_cpus %s\n' "$(basename "$q")" "$cur"
        if ((rps)) && [[ -n $mask ]]; then
            # Compare without commas and leading zeros (the kernel pads).
            if [[ $(strip_mask "$cur") != "$(strip_mask "$mask")" ]]; then
                do_write "$mask" "$q/rps_cpus"
            fi
        fi
    done
done

echo
if ((!plan)); then
    echo "# shown only: pass --sluice-cpus (or run sluice) to plan NIC CPUs apart from the workers"
    exit 0
fi
if ((apply)); then
    ((failures == 0)) || { echo "# $failures write(s) failed" >&2; exit 1; }
    echo "# applied (until reboot); re-run without --apply to check"
else
    echo "# dry run: nothing written; add --apply (as root) to write"
fi
