//! The machine's DMI strings (`/sys/class/dmi/id`), under a root (doctor's `--root`, a test's
//! scratch directory). A machine without DMI (some VMs, containers without /sys) has none.

use std::path::Path;

use crate::model::cloud::{Detected, Dmi};

/// The strings that name a cloud; an unreadable one is empty.
pub(crate) fn read(root: &Path) -> Dmi {
    let dir = root.join("sys/class/dmi/id");
    let field = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    Dmi {
        sys_vendor: field("sys_vendor"),
        product_name: field("product_name"),
        product_version: field("product_version"),
        bios_vendor: field("bios_vendor"),
        chassis_asset_tag: field("chassis_asset_tag"),
    }
}

/// The cloud this machine runs in, from its DMI under `root`.
pub(crate) fn cloud(root: &Path) -> Option<Detected> {
    read(root).cloud()
}

/// This machine's cloud, read once per process: DMI does not change while it runs, and
/// `watch` discovers the namespace at every reconcile (5 file reads each, for nothing).
pub(crate) fn machine_cloud() -> Option<Detected> {
    static CLOUD: std::sync::OnceLock<Option<Detected>> = std::sync::OnceLock::new();
    CLOUD.get_or_init(|| cloud(Path::new("/"))).clone()
}
