//! The cloud the machine's DMI names (what `--metadata auto` follows), and whether the
//! metadata setting fits it.

use std::path::Path;

use super::{Finding, Severity};
use crate::{
    kernel::dmi,
    model::cloud::{Cloud, Detected},
    settings::config::{Config, MetadataSource},
};

pub(super) fn check(root: &Path, cfg: &Config) -> Finding {
    verdict(dmi::cloud(root), cfg.metadata)
}

fn verdict(found: Option<Detected>, metadata: MetadataSource) -> Finding {
    let Some(c) = found else {
        let what = "no cloud named in this machine's DMI (/sys/class/dmi/id)";
        return match metadata {
            MetadataSource::Aws => Finding::new(
                "cloud",
                Severity::Warning,
                format!("{what}, and --metadata aws asks EC2's metadata service"),
            )
            .fix("on EC2 every instance's DMI says \"Amazon EC2\": check /sys is the host's; elsewhere drop --metadata"),
            _ => Finding::ok("cloud", format!("{what}: --metadata auto reads none")),
        };
    };
    let here = format!("{} ({})", c.cloud.name(), c.evidence);
    match (c.cloud, metadata) {
        (Cloud::Aws, MetadataSource::None) => Finding::ok(
            "cloud",
            format!("{here}; metadata off: addresses from netlink alone (--metadata auto or aws adds IMDSv2's)"),
        ),
        (Cloud::Aws, _) => Finding::ok("cloud", format!("{here}: the metadata is IMDSv2's")),
        (_, MetadataSource::Aws) => Finding::new(
            "cloud",
            Severity::Conflict,
            format!("{here}, and --metadata aws asks EC2's service, which is not here: every lookup fails"),
        )
        .fix("--metadata auto (netlink alone here) or none"),
        (_, MetadataSource::Auto) => Finding::new(
            "cloud",
            Severity::Warning,
            format!("{here}: enipin reads only EC2's metadata so far, so --metadata auto is netlink alone here"),
        ),
        (_, MetadataSource::None) => Finding::ok("cloud", format!("{here}; metadata off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cloud: Cloud) -> Option<Detected> {
        Some(Detected {
            cloud,
            evidence: "x".into(),
        })
    }

    /// The cloud is named, and a source that cannot answer there is a conflict.
    #[test]
    fn the_cloud_is_named_and_a_source_that_cannot_answer_is_not_ok() {
        use MetadataSource::{Auto, Aws};
        let sev = |f: Option<Detected>, m| verdict(f, m).severity;
        assert_eq!(sev(at(Cloud::Aws), Auto), Severity::Ok);
        assert!(verdict(at(Cloud::Aws), Auto).meaning.starts_with("EC2 (x)"));
        assert_eq!(sev(at(Cloud::Azure), Aws), Severity::Conflict);
        assert_eq!(sev(at(Cloud::Gcp), Auto), Severity::Warning);
        assert!(
            verdict(at(Cloud::Oci), Auto)
                .meaning
                .starts_with("Oracle Cloud")
        );
        assert_eq!(sev(None, Aws), Severity::Warning);
        assert_eq!(sev(None, Auto), Severity::Ok);
    }
}
