# kvmtune %post ($1: 1 on install, 2 on upgrade). rpm runs scriptlets with /bin/sh.
# The hook and the emulator wrapper path are symlinks to /usr/sbin/kvmtune (kvmtune picks its
# mode from argv[0]); cargo-generate-rpm cannot put symlinks in the payload, so they are made
# here and removed by %postun. An existing file that is not our symlink is left alone.
for link in /etc/libvirt/hooks/qemu.d/kvmtune:/usr/sbin/kvmtune \
    /usr/libexec/kvmtune/qemu-system-x86_64:../../sbin/kvmtune; do
    path=${link%%:*}
    target=${link#*:}
    if [ -e "$path" ] || [ -L "$path" ]; then
        [ "$(readlink "$path")" = "$target" ] \
            || echo "kvmtune: $path exists and is not kvmtune's symlink: left alone" >&2
        continue
    fi
    mkdir -p "${path%/*}"
    ln -s "$target" "$path"
done
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable kvmtune-recover.service kvmtune-watch.service >/dev/null 2>&1 || :
        systemctl start kvmtune-watch.service >/dev/null 2>&1 || :
    elif [ -e /usr/lib/systemd/system/kvmtune-irq-watch.service ]; then
        # Upgrade from a release with kvmtune-irq-watch.service (its file goes after this
        # scriptlet): kvmtune-watch.service replaces it, enabled if it was.
        if systemctl is-enabled --quiet kvmtune-irq-watch.service; then
            systemctl enable kvmtune-watch.service >/dev/null 2>&1 || :
        fi
        systemctl disable --now kvmtune-irq-watch.service >/dev/null 2>&1 || :
        if systemctl is-enabled --quiet kvmtune-watch.service; then
            systemctl start kvmtune-watch.service >/dev/null 2>&1 || :
        fi
    fi
    # libvirt re-scans its hooks on reload (SIGHUP); running VMs are not affected.
    for d in libvirtd virtqemud; do
        if systemctl is-active --quiet "$d.service"; then
            systemctl reload "$d.service" || echo "kvmtune: run 'systemctl reload $d.service' so it finds kvmtune's hook" >&2
        fi
    done
else
    echo "kvmtune: systemd does not run here: after installing, send SIGHUP to libvirtd/virtqemud so they find the hook (running VMs are not affected)"
fi
exit 0
