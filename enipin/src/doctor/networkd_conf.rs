//! What enipin asks of systemd-networkd, for [`super::networkd`] (networkd.conf) and
//! [`super::networkd_links`] (the links' `.network` files): its drop-in, `KeepConfiguration=static`,
//! and systemd's spelling of a boolean.

/// The drop-in that keeps networkd's hands off rules and routes it did not create. Named to
/// sort after the usual drop-ins: the last assignment wins.
pub(crate) const DROP_IN_PATH: &str = "/etc/systemd/networkd.conf.d/99-enipin.conf";
/// Its contents.
pub(crate) const DROP_IN_BODY: &str =
    "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n";

/// systemd's `parse_boolean`.
pub(super) fn systemd_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Both halves: the drop-in (no rule or route of enipin's deleted), and `KeepConfiguration=static`
/// (no address removed at a restart or a reload).
pub(super) fn fix() -> String {
    format!(
        "{DROP_IN_PATH}:\n{DROP_IN_BODY}then `systemctl restart systemd-networkd` (networkd reads \
         networkd.conf only when it starts);\nand `KeepConfiguration=static` in [Network] of each \
         managed interface's .network file, then `networkctl reload` (a restart or a reload then \
         leaves its addresses and routes; `networkctl reconfigure` still removes and adds them \
         back);\n`enipin render --format networkd` prints both"
    )
}
