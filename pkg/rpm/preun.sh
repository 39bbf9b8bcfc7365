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
        systemctl --no-reload disable --now kvmtune-watch.service kvmtune-recover.service kvmtune-balance.service >/dev/null 2>&1 || :
    fi
    # Metrics left behind would be served by node_exporter as if kvmtune still ran.
    dir=$(sed -n 's/^[[:space:]]*textfile_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' /etc/kvmtune/kvmtune.toml 2>/dev/null | head -1)
    rm -f "${dir:-/var/lib/prometheus/node-exporter}/kvmtune.prom"
fi
exit 0
