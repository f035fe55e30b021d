//! systemd-networkd's configuration beside a running enipin: networkd is EC2's usual network
//! manager (Amazon Linux 2023, Ubuntu), and enipin's rules at its own priorities would conflict
//! with enipin's rules layer (issue 24: doctor counted 9 conflicts). So the files carry only what
//! keeps networkd off enipin's work (docs/networkd.md, measured with networkd 252): the
//! networkd.conf drop-in (no rule of enipin's deleted in 12 triggers, against 3-5 each without
//! it) and `KeepConfiguration=static` for each interface (a restart or a changed-file reload
//! then flaps no address).
//!
//! Why drop-ins, not a `.network` file of ours: networkd applies to a link the first `.network`
//! file in name order whose `[Match]` matches it, and ignores every later one. A file sorting
//! before the distribution's takes the link from it (issue 28: `70-enipin-eth0.network` sorted
//! before AL2023's `70-eth0.network`) and must then repeat its DHCP, MTU and DNS settings; a file
//! sorting after it is never read. A drop-in `NAME.network.d/*.conf` is merged into `NAME.network`
//! whichever directory holds it (/etc, /run, /usr/lib): it adds one key and leaves the file's
//! match and DHCP alone, and it names nothing of this instance's (no address, no MAC), so it
//! belongs in an image. The file is the one networkd applies now, found as `enipin doctor` finds
//! it: on AL2023 `70-IFACE.network` (amazon-ec2-net-utils writes it in /run, by interface name,
//! at each boot), before that `80-ec2.network`; with netplan `10-netplan-IFACE.network`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{File, header};
use crate::{
    doctor::{NETWORKD_DROP_IN_BODY, NETWORKD_DROP_IN_PATH},
    model::ManagedInterface,
};

/// The drop-in's name in each `NAME.network.d/`. Drop-ins are read in name order across the
/// directories and the last `KeepConfiguration=` wins: `70-enipin.conf` comes before
/// amazon-ec2-net-utils' `eni.conf` and `ec2net_*.conf` (digits sort first; `systemd-analyze
/// cat-config` shows that order in baseline.rs), which set none, so it stands; `enipin doctor`
/// reports the value in effect if one ever does.
const LINK_DROP_IN: &str = "70-enipin.conf";

const ABOUT: &str = "\
# systemd-networkd beside a running enipin (`enipin watch`): networkd keeps the addresses, DHCP
# and the main table's routes, enipin its rules and tables (they name this instance's addresses
# and are not here). Nothing in these files is this instance's own: they fit an image.
";

/// The networkd.conf drop-in, then one drop-in per `.network` file applying to a managed
/// interface (`link_files[i]` is `managed[i]`'s, `None`: networkd leaves it alone).
pub(super) fn files(managed: &[ManagedInterface], link_files: &[Option<String>]) -> Vec<File> {
    let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut alone = Vec::new();
    for (m, f) in managed.iter().zip(link_files) {
        match f {
            Some(f) => by_file.entry(f).or_default().push(&m.name),
            None => alone.push(m.name.as_str()),
        }
    }
    let mut conf = header("networkd", ABOUT);
    conf += "# Read when networkd starts: `systemctl restart systemd-networkd`.\n";
    for name in alone {
        let _ = writeln!(
            conf,
            "# {name}: no .network file matches it, networkd leaves it alone: no drop-in for it."
        );
    }
    conf += NETWORKD_DROP_IN_BODY;
    let mut out = vec![File::config(
        NETWORKD_DROP_IN_PATH.trim_start_matches('/').to_owned(),
        conf,
    )];
    out.extend(
        by_file
            .into_iter()
            .map(|(f, names)| link_drop_in(f, &names)),
    );
    out
}

/// `KeepConfiguration=static` added to `file`, which networkd applies to `names`.
fn link_drop_in(file: &str, names: &[&str]) -> File {
    let mut body = header("networkd", ABOUT);
    let _ = writeln!(
        body,
        "# networkd applies {file} to {}: this adds to it, its [Match] and DHCP stay its own.\n\
         # A restart or a reload then leaves the static addresses and routes in place\n\
         # (`networkctl reconfigure` still removes them and adds them back). Then `networkctl reload`.",
        names.join(", ")
    );
    body += "[Network]\nKeepConfiguration=static\n";
    File::config(format!("etc/systemd/network/{file}.d/{LINK_DROP_IN}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str) -> ManagedInterface {
        let addrs = vec!["198.18.0.10/24".parse().unwrap()];
        ManagedInterface::fixture(1, name, addrs)
    }

    /// AL2023: eth0's own file, eth1 and eth2 still under the catch-all, eth3 under none.
    #[test]
    fn one_drop_in_per_file_networkd_applies_and_none_for_a_link_it_leaves_alone() {
        let managed: Vec<_> = ["eth0", "eth1", "eth2", "eth3"].map(iface).into();
        let files = files(
            &managed,
            &[
                Some("70-eth0.network".to_owned()),
                Some("80-ec2.network".to_owned()),
                Some("80-ec2.network".to_owned()),
                None,
            ],
        );
        let paths: Vec<_> = files.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "etc/systemd/networkd.conf.d/99-enipin.conf",
                "etc/systemd/network/70-eth0.network.d/70-enipin.conf",
                "etc/systemd/network/80-ec2.network.d/70-enipin.conf",
            ]
        );
        assert!(
            files[0]
                .body
                .contains("# eth3: no .network file matches it")
        );
        assert!(files[0].body.ends_with(NETWORKD_DROP_IN_BODY));
        assert!(files[2].body.contains("80-ec2.network to eth1, eth2:"));
        for f in &files[1..] {
            assert!(
                f.body.ends_with("[Network]\nKeepConfiguration=static\n"),
                "{f:?}"
            );
        }
        for f in &files {
            assert!(f.body.contains("Not in it: enipin's datapath"), "{f:?}");
            let settings: Vec<_> = f.body.lines().filter(|l| !l.starts_with('#')).collect();
            for per_instance in ["[Match]", "Address=", "MACAddress=", "DHCP="] {
                assert!(
                    settings.iter().all(|l| !l.contains(per_instance)),
                    "{per_instance}: {f:?}"
                );
            }
        }
    }
}
