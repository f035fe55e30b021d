//! The Amazon VPC CNI (EKS): its pod rules over netlink, its CNI configuration under the root.
//! It hands the ENIs' secondary addresses to pods and routes them itself (rules at 512 and
//! 1536): enipin's rules sit below them, so pods are untouched, but `--configure-addresses`
//! would put the pods' addresses on the host (attach and watch refuse it while the rules are
//! there).

use std::path::Path;

use super::{Finding, Severity};
use crate::{model::discovery::Discovery, settings::config::Config};

/// The VPC CNI's configuration, as its aws-node DaemonSet writes it.
const CONFLIST: &str = "etc/cni/net.d/10-aws.conflist";

pub(super) fn check(d: &Discovery, root: &Path, cfg: &Config) -> Vec<Finding> {
    let rules = d.vpc_cni_rules();
    let conf = root.join(CONFLIST).exists();
    let mut seen = Vec::new();
    if rules > 0 {
        seen.push(format!("{rules} pod rule(s) at priorities 512/1536"));
    }
    if conf {
        seen.push(format!("/{CONFLIST}"));
    }
    if seen.is_empty() {
        return vec![Finding::ok(
            "vpc-cni",
            "the Amazon VPC CNI is not here (no pod rules at 512/1536, no /etc/cni/net.d/10-aws.conflist)"
                .into(),
        )];
    }
    let severity = if cfg.configure_addresses {
        Severity::Conflict
    } else {
        Severity::Warning
    };
    vec![
        Finding::new(
            "vpc-cni",
            severity,
            format!(
                "the Amazon VPC CNI runs here ({}): the ENIs' secondary addresses are its pods'. \
                 enipin's rules sit below its 512 and 1536, so pods are untouched, but \
                 configure-addresses would put the pods' addresses on the host (refused)",
                seen.join(", ")
            ),
        )
        .fix(
            "name the host-network ENIs in --interfaces (select.interfaces) and leave \
             metadata.configure-addresses off (docs/eks.md)",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::InstalledRule;

    fn pod_rule(priority: u32, table: u32) -> InstalledRule {
        InstalledRule::foreign(priority, table)
    }

    #[test]
    fn the_vpc_cni_is_named_from_its_rules_or_its_configuration() {
        let root = std::env::temp_dir().join("enipin-doctor-cni-nonexistent");
        let mut d = Discovery::default();
        assert_eq!(
            check(&d, &root, &Config::default())[0].severity,
            Severity::Ok
        );
        d.rules = vec![
            pod_rule(512, 254),
            pod_rule(1536, 2),
            pod_rule(20000, 20003),
        ];
        assert_eq!(d.vpc_cni_rules(), 2);
        let f = &check(&d, &root, &Config::default())[0];
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.meaning.contains("(2 pod rule(s) at priorities 512/1536)"),
            "{}",
            f.meaning
        );
        let cfg = Config {
            configure_addresses: true,
            ..Config::default()
        };
        assert_eq!(check(&d, &root, &cfg)[0].severity, Severity::Conflict);
    }
}
