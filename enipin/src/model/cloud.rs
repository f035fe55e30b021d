//! The cloud a machine runs in, from its DMI (SMBIOS) strings, the way systemd's
//! `detect-virt` and cloud-init's `ds-identify` tell: never by probing an address (a probe of
//! 169.254.169.254 on the wrong cloud, or on none, waits out its timeout and may reach
//! something else).

/// The DMI strings that name a cloud (`/sys/class/dmi/id/*`, trimmed; empty when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub product_version: String,
    pub bios_vendor: String,
    pub chassis_asset_tag: String,
}

/// The clouds whose metadata enipin knows of (it reads only EC2's so far).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cloud {
    Aws,
    Azure,
    Gcp,
    Oci,
}

/// A cloud, and the DMI string that said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Detected {
    pub cloud: Cloud,
    /// `sys_vendor "Amazon EC2"`.
    pub evidence: String,
}

/// Azure's chassis asset tag on every VM (cloud-init's DataSourceAzure checks the same).
const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";
/// Oracle Cloud's chassis asset tag (cloud-init's DataSourceOracle).
const OCI_ASSET_TAG: &str = "OracleCloud.com";

impl Cloud {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cloud::Aws => "EC2",
            Cloud::Azure => "Azure",
            Cloud::Gcp => "Google Cloud",
            Cloud::Oci => "Oracle Cloud",
        }
    }
}

impl Dmi {
    /// The cloud these strings name, if any. EC2: Nitro instances say `sys_vendor "Amazon
    /// EC2"`, Xen ones a `product_version` with "amazon" (`4.11.amazon`).
    pub(crate) fn cloud(&self) -> Option<Detected> {
        let found = |cloud, field: &str, value: &str| {
            Some(Detected {
                cloud,
                evidence: format!("{field} {value:?}"),
            })
        };
        if self.sys_vendor == "Amazon EC2" {
            return found(Cloud::Aws, "sys_vendor", &self.sys_vendor);
        }
        if self.bios_vendor == "Amazon EC2" {
            return found(Cloud::Aws, "bios_vendor", &self.bios_vendor);
        }
        if self.product_version.to_ascii_lowercase().contains("amazon") {
            return found(Cloud::Aws, "product_version", &self.product_version);
        }
        if self.chassis_asset_tag == AZURE_ASSET_TAG {
            return found(Cloud::Azure, "chassis_asset_tag", &self.chassis_asset_tag);
        }
        if self.product_name == "Google Compute Engine" {
            return found(Cloud::Gcp, "product_name", &self.product_name);
        }
        if self.sys_vendor == "Google" {
            return found(Cloud::Gcp, "sys_vendor", &self.sys_vendor);
        }
        if self.chassis_asset_tag == OCI_ASSET_TAG {
            return found(Cloud::Oci, "chassis_asset_tag", &self.chassis_asset_tag);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dmi(f: impl FnOnce(&mut Dmi)) -> Dmi {
        let mut d = Dmi::default();
        f(&mut d);
        d
    }

    /// Each cloud by the strings its VMs carry; a laptop, a KVM guest and Hyper-V on premises
    /// (Microsoft's vendor without Azure's tag) are none.
    #[test]
    fn each_cloud_is_known_by_its_dmi_strings() {
        let cloud = |d: Dmi| d.cloud().map(|c| c.cloud);
        assert_eq!(cloud(dmi(|d| d.sys_vendor = "Amazon EC2".into())), Some(Cloud::Aws));
        assert_eq!(
            cloud(dmi(|d| d.product_version = "4.11.amazon".into())),
            Some(Cloud::Aws)
        );
        assert_eq!(
            cloud(dmi(|d| d.chassis_asset_tag = AZURE_ASSET_TAG.into())),
            Some(Cloud::Azure)
        );
        assert_eq!(
            cloud(dmi(|d| d.product_name = "Google Compute Engine".into())),
            Some(Cloud::Gcp)
        );
        assert_eq!(
            cloud(dmi(|d| d.chassis_asset_tag = OCI_ASSET_TAG.into())),
            Some(Cloud::Oci)
        );
        for none in [
            dmi(|d| d.sys_vendor = "LENOVO".into()),
            dmi(|d| d.sys_vendor = "QEMU".into()),
            dmi(|d| {
                d.sys_vendor = "Microsoft Corporation".into();
                d.product_name = "Virtual Machine".into();
            }),
            Dmi::default(),
        ] {
            assert_eq!(none.cloud(), None, "{none:?}");
        }
        let ec2 = dmi(|d| d.sys_vendor = "Amazon EC2".into()).cloud().unwrap();
        assert_eq!(ec2.evidence, "sys_vendor \"Amazon EC2\"");
    }
}
