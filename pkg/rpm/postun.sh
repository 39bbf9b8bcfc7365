# kvmtune %postun ($1: 0 on erase, 1 on upgrade).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 0 ]; then
    for path in /etc/libvirt/hooks/qemu.d/kvmtune /usr/libexec/kvmtune/qemu-system-x86_64; do
        case "$(readlink "$path" 2>/dev/null)" in
        /usr/sbin/kvmtune | ../../sbin/kvmtune) rm -f "$path" ;;
        esac
    done
    rmdir /usr/libexec/kvmtune 2>/dev/null || :
    rm -rf /run/kvmtune
elif [ -d /run/systemd/system ]; then
    systemctl try-restart kvmtune-watch.service kvmtune-balance.service >/dev/null 2>&1 || :
fi
exit 0
