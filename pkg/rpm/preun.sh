# kvmtune %preun ($1: 0 on erase, 1 on upgrade). On erase, refuse while kvmtune holds host
# resources for a running VM: once the package is gone nothing would give them back.
if [ "$1" -eq 0 ]; then
    if [ -d /run/kvmtune ]; then
        /usr/sbin/kvmtune recover --all >/dev/null || {
            echo "kvmtune: 'kvmtune recover --all' failed (see above): fix it, then erase kvmtune again" >&2
            exit 1
        }
        if ! /usr/sbin/kvmtune status | sed -n '/^VMs:$/{n;p;}' | grep -qx '  none'; then
            echo "kvmtune: not erasing: VMs still hold host resources (kvmtune status); stop them, or run 'kvmtune recover NAME'" >&2
            exit 1
        fi
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now kvmtune-irq-watch.service kvmtune-recover.service kvmtune-balance.service >/dev/null 2>&1 || :
    fi
fi
exit 0
