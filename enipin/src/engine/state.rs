//! What the kernel cannot tell back: the sysctl values enipin replaced, the options of the last
//! attach and the interfaces it managed. One JSON file under the state directory, replaced
//! atomically (write a temporary file, then rename) so a crash never leaves half a file.
//!
//! The file is read back as untrusted input: it must be root's (the caller's) and writable by no
//! one else, in a directory kept 0700, and every field is checked before anything acts on it (a
//! sysctl it names can only be one attach sets; see [`sysctl::Key`]).

use std::{
    collections::BTreeMap,
    io::Read as _,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::PathBuf,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    kernel::claim::{Claim, ClaimError},
    settings::config::{Config, Paths},
    model::discovery::Discovery,
    model::{Cidr, Interface, MacAddr, ManagedInterface, fmt_mac},
    routing::plan::Change,
    model::sysctl::{self, Key, Knob},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The options of the last attach (`status` computes drift against them).
    pub config: Option<Config>,
    pub managed: Vec<ManagedInterface>,
    /// The values the sysctls had before enipin first changed them.
    #[serde(deserialize_with = "saved_sysctls")]
    pub sysctls: Vec<SavedSysctl>,
    /// The pin directory the datapath was attached under (`detach` removes it there whatever
    /// `--pin-dir` says). State files written before this field existed read as `None`.
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// The addresses `--configure-addresses` added: how enipin knows its own where the kernel
    /// keeps no address protocol (`IFA_PROTO`, before 5.18). Absent in earlier state files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddedAddress>,
}

/// An address enipin added, on the interface of this ifindex and MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AddedAddress {
    pub(crate) ifindex: u32,
    pub(crate) mac: MacAddr,
    pub(crate) cidr: Cidr,
}

impl State {
    /// Records the addresses `changes` add and forgets those they remove.
    pub(crate) fn record_addresses(&mut self, changes: &[Change], managed: &[ManagedInterface]) {
        for c in changes {
            match c {
                Change::AddAddress(a) => {
                    let Some(m) = managed.iter().find(|m| m.ifindex == a.ifindex) else {
                        continue;
                    };
                    let rec = AddedAddress {
                        ifindex: a.ifindex,
                        mac: m.mac,
                        cidr: a.cidr,
                    };
                    if !self.addresses.contains(&rec) {
                        self.addresses.push(rec);
                    }
                }
                Change::DelAddress(a) => self
                    .addresses
                    .retain(|r| !(r.ifindex == a.ifindex && r.cidr == a.cidr)),
                _ => {}
            }
        }
    }

    /// Marks the recorded addresses still on their interface (same ifindex and MAC) as enipin's
    /// in `d`, beside those the kernel says are (`IFA_PROTO`).
    pub(crate) fn mark_addresses(&self, d: &mut Discovery) {
        for r in &self.addresses {
            if let Some(i) = d
                .interfaces
                .iter_mut()
                .find(|i| i.ifindex == r.ifindex && i.mac == r.mac)
                && let Some(c) = i.addrs.iter().find(|c| c.addr == r.cidr.addr).copied()
                && !i.ours.iter().any(|o| o.addr == c.addr)
            {
                i.ours.push(c);
            }
        }
    }
}

/// One sysctl value enipin replaced, kept by the interface's ifindex and MAC (names change: `ip
/// link set eth1 name x`), restored under whatever name the interface has then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedSysctl {
    /// `None` only for an entry of a state file from before ifindexes were kept whose interface
    /// was no longer managed: found by `ifname` then.
    pub(crate) ifindex: Option<u32>,
    pub(crate) mac: Option<MacAddr>,
    /// The interface's name when the value was saved.
    pub(crate) ifname: String,
    pub(crate) knob: Knob,
    pub(crate) old: String,
}

impl SavedSysctl {
    pub(crate) fn new(m: &ManagedInterface, knob: Knob, old: &str) -> Self {
        Self {
            ifindex: Some(m.ifindex),
            mac: Some(m.mac),
            ifname: m.name.clone(),
            knob,
            old: old.to_owned(),
        }
    }

    /// Saved for interface `m` (same ifindex and MAC).
    pub(crate) fn is_of(&self, m: &ManagedInterface) -> bool {
        self.ifindex == Some(m.ifindex) && self.mac == Some(m.mac)
    }

    /// The interface this value belongs to now, if it still exists: the same ifindex and MAC
    /// (an ENI detached and attached again is a new device whose sysctls started afresh).
    pub(crate) fn find<'a>(&self, interfaces: &'a [Interface]) -> Option<&'a Interface> {
        match (self.ifindex, self.mac) {
            (Some(i), Some(mac)) => interfaces.iter().find(|x| x.ifindex == i && x.mac == mac),
            _ => interfaces.iter().find(|x| x.name == self.ifname),
        }
    }

    /// The key as saved (under the name the interface had then).
    pub(crate) fn saved_key(&self) -> String {
        format!("net.ipv4.conf.{}.{}", self.ifname, self.knob.name())
    }

    fn check(&self) -> Result<()> {
        Key::new(&self.ifname, self.knob)?;
        sysctl::check_value(&self.old).with_context(|| self.saved_key())?;
        if self.ifindex == Some(0) {
            bail!("{}: ifindex 0 is no interface", self.saved_key());
        }
        Ok(())
    }
}

impl State {
    /// sysctl key (as saved) → the value before enipin changed it, for `status`.
    pub(crate) fn sysctls_by_key(&self) -> BTreeMap<String, String> {
        self.sysctls
            .iter()
            .map(|s| (s.saved_key(), s.old.clone()))
            .collect()
    }

    /// Records `old` as `m`'s value of `knob` unless one is recorded already (the first value
    /// enipin replaced is the one to restore).
    pub(crate) fn remember(&mut self, m: &ManagedInterface, knob: Knob, old: &str) {
        if !self.sysctls.iter().any(|s| s.knob == knob && s.is_of(m)) {
            self.sysctls.push(SavedSysctl::new(m, knob, old));
        }
    }

    /// Entries of an earlier state file (kept by name) take the ifindex and MAC of the managed
    /// interface of that name, as the file recorded it.
    fn adopt_names(&mut self) {
        for s in self.sysctls.iter_mut().filter(|s| s.ifindex.is_none()) {
            if let Some(m) = self.managed.iter().find(|m| m.name == s.ifname) {
                (s.ifindex, s.mac) = (Some(m.ifindex), Some(m.mac));
            }
        }
    }

    /// Every field something acts on, checked: an error names the field and the value.
    fn check(&self) -> Result<()> {
        for s in &self.sysctls {
            s.check()?;
        }
        for m in &self.managed {
            Key::new(&m.name, Knob::RpFilter)
                .map(|_| ())
                .and_then(|()| match m.ifindex {
                    0 => bail!("ifindex 0 is no interface"),
                    _ => Ok(()),
                })
                .with_context(|| format!("managed interface {} ({})", m.name, fmt_mac(&m.mac)))?;
        }
        Ok(())
    }
}

/// `sysctls` as written: a list of [`SavedSysctl`], or, before ifindexes were kept, a map of key
/// (`net.ipv4.conf.eth1.arp_ignore`) → old value, each key parsed as strictly as attach makes them
/// (the ifindex and MAC are filled in by [`State::adopt_names`]).
fn saved_sysctls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SavedSysctl>, D::Error> {
    use serde::de::Error as _;
    // Through a Value rather than an untagged enum: its errors name the field that is wrong.
    let custom = |e: &dyn std::fmt::Display| D::Error::custom(format!("sysctls: {e:#}"));
    match serde_json::Value::deserialize(d)? {
        v @ serde_json::Value::Array(_) => serde_json::from_value(v).map_err(|e| custom(&e)),
        v => serde_json::from_value::<BTreeMap<String, String>>(v)
            .map_err(|e| custom(&e))?
            .into_iter()
            .map(|(key, old)| {
                let k = Key::parse(&key).map_err(|e| custom(&format!("{e:#}")))?;
                Ok(SavedSysctl {
                    ifindex: None,
                    mac: None,
                    ifname: k.ifname().to_owned(),
                    knob: k.knob(),
                    old,
                })
            })
            .collect(),
    }
}

/// The state file's path under `paths.state_dir`.
pub fn file(paths: &Paths) -> PathBuf {
    paths.state_dir.join("state.json")
}

/// The saved state, or `None` when there is none. Refused, changing nothing, when the file is
/// not a regular file of the caller's (root's), is writable by others, or says anything attach
/// could not have written.
pub(crate) fn load(paths: &Paths) -> Result<Option<State>> {
    let f = file(paths);
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&f)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening state file {}", f.display())),
    };
    // The descriptor's metadata, not the path's: what is checked is what is read.
    let meta = file
        .metadata()
        .with_context(|| format!("reading state file {}", f.display()))?;
    check_owner(&meta, &f)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("reading state file {}", f.display()))?;
    let refuse = || {
        format!(
            "state file {} is corrupt or was not written by enipin; nothing was changed. Inspect \
             it, restore the sysctls it lists by hand if needed, then remove it and run the \
             command again",
            f.display()
        )
    };
    let mut state: State = serde_json::from_str(&text).with_context(refuse)?;
    state.check().with_context(refuse)?;
    state.adopt_names();
    Ok(Some(state))
}

/// A regular file of the caller's that no one else may write.
fn check_owner(meta: &std::fs::Metadata, path: &std::path::Path) -> Result<()> {
    let what = "state file";
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() {
        bail!(
            "{what} {} is not a regular file; remove it and run the command again",
            path.display()
        );
    }
    if meta.uid() != me {
        bail!(
            "{what} {} belongs to uid {}, not {me}; refusing to trust it. Check who wrote it, then \
             `chown {me} {}` or remove it",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{what} {} is writable by group or others (mode {:o}); refusing to trust it. Check \
             who changed it, then `chmod go-w {}`",
            path.display(),
            meta.mode() & 0o7777,
            path.display()
        );
    }
    Ok(())
}

/// Creates the state directory 0700 (and makes an existing one 0700): nothing but root reads or
/// replaces the state file.
fn create_dir(paths: &Paths) -> Result<()> {
    let d = &paths.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
        .with_context(|| format!("creating state directory {}", d.display()))?;
    let meta = std::fs::symlink_metadata(d)
        .with_context(|| format!("reading state directory {}", d.display()))?;
    if !meta.is_dir() {
        bail!(
            "state directory {} is not a directory; choose another --state-dir",
            d.display()
        );
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "state directory {} belongs to uid {}, not {me}; choose another --state-dir or \
             `chown {me}` it",
            d.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making state directory {} mode 0700", d.display()))?;
    }
    Ok(())
}

pub(crate) fn save(paths: &Paths, state: &State) -> Result<()> {
    let f = file(paths);
    create_dir(paths)?;
    let tmp = f.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).context("serialising the state")?;
    // 0600 whatever the umask: load refuses a file others can write.
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut out, text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(out);
    std::fs::rename(&tmp, &f)
        .with_context(|| format!("renaming {} to {}", tmp.display(), f.display()))
}

/// Puts back what `load` returned before a change (None: no file).
pub(crate) fn restore(paths: &Paths, previous: Option<&State>) -> Result<()> {
    match previous {
        Some(s) => save(paths, s),
        None => remove(paths),
    }
}

/// Held by a changer (attach, detach, watch) for its whole run: the state directory's lock and
/// the network namespace's claim.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: std::fs::File,
    _claim: Claim,
}

/// Locks the state directory, then claims the network namespace ([`Claim`]): one changer per
/// state directory, and one per namespace whatever its directories. Each is tried again for up
/// to a second (20 x 50 ms) before it is a refusal, which names the holder where it can.
pub(crate) fn lock(paths: &Paths) -> Result<Lock> {
    let file = lock_dir(paths)?;
    // The command, as `status` and a refused second enipin show it.
    let command = std::env::args()
        .find(|a| ["attach", "detach", "watch"].contains(&a.as_str()))
        .unwrap_or_else(|| "enipin".into());
    let about = format!(
        "enipin {command}, pid {}, state dir {}, pin dir {}",
        std::process::id(),
        paths.state_dir.display(),
        paths.pin_dir.display()
    );
    let mut tries = 0;
    let claim = loop {
        match Claim::take(about.clone()) {
            Ok(c) => break c,
            Err(ClaimError::Held(_)) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(ClaimError::Held(who)) => anyhow::bail!(
                "another enipin runs in this network namespace ({who}): one enipin per \
                 namespace, or each deletes the other's rules. Stop it (or wait for it to \
                 finish), or use its state and pin directories"
            ),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(Lock {
        _file: file,
        _claim: claim,
    })
}

/// An exclusive lock on the state directory for the life of the returned file.
fn lock_dir(paths: &Paths) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    create_dir(paths)?;
    let path = paths.state_dir.join("lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // A holder killed a moment ago can keep the lock for a while: the child it was starting
    // (`nft`) shares the descriptor from fork until its exec closes it. So a held lock is tried
    // again for up to a second (20 x 50 ms) before it is a refusal.
    let try_lock = || {
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    };
    let mut tries = 0;
    while !try_lock() {
        tries += 1;
        if tries < 20 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        anyhow::bail!(
            "another enipin attach/detach/watch holds {} ({}); wait for it to finish (stop a running \
             `enipin watch` first)",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(file)
}

pub(crate) fn remove(paths: &Paths) -> Result<()> {
    let f = file(paths);
    match std::fs::remove_file(&f) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", f.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eni(ifindex: u32, name: &str) -> ManagedInterface {
        ManagedInterface::fixture(ifindex, name, Vec::new())
    }

    fn iface(m: &ManagedInterface, name: &str) -> Interface {
        Interface {
            ifindex: m.ifindex,
            name: name.into(),
            mac: m.mac,
            mtu: m.mtu,
            up: true,
            ethernet: true,
            loopback: false,
            master: None,
            addrs: Vec::new(),
            ours: Vec::new(),
            meta: None,
            forwarding: m.forwarding,
            ipv4_conf: None,
        }
    }

    fn temp_paths(tag: &str) -> Paths {
        let dir =
            std::env::temp_dir().join(format!("enipin-state-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Paths {
            pin_dir: dir.join("pins"),
            state_dir: dir,
        }
    }

    fn write_raw(paths: &Paths, text: &str) {
        create_dir(paths).unwrap();
        std::fs::write(file(paths), text).unwrap();
        std::fs::set_permissions(file(paths), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The previous version's file: `sysctls` a map by name. It loads, each entry taking the
    /// ifindex and MAC of the managed interface of its name.
    #[test]
    fn a_state_file_of_the_previous_version_loads() {
        let paths = temp_paths("legacy");
        let managed = serde_json::to_string(&[eni(3, "eth1")]).unwrap();
        write_raw(
            &paths,
            &format!(
                r#"{{"config":null,"managed":{managed},"sysctls":{{
                    "net.ipv4.conf.eth1.arp_ignore":"0","net.ipv4.conf.gone.rp_filter":"1"}}}}"#
            ),
        );
        let st = load(&paths).unwrap().unwrap();
        assert_eq!(
            st.sysctls,
            [
                SavedSysctl::new(&eni(3, "eth1"), Knob::ArpIgnore, "0"),
                SavedSysctl {
                    ifindex: None,
                    mac: None,
                    ifname: "gone".into(),
                    knob: Knob::RpFilter,
                    old: "1".into()
                },
            ]
        );
        // Saved again in the new shape, it reads back the same.
        save(&paths, &st).unwrap();
        assert_eq!(load(&paths).unwrap().unwrap(), st);
        let mode = std::fs::metadata(file(&paths)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&paths.state_dir).unwrap().mode() & 0o777,
            0o700
        );
        std::fs::remove_dir_all(&paths.state_dir).unwrap();
    }

    #[test]
    fn keys_and_values_attach_could_not_have_written_are_refused() {
        let paths = temp_paths("hostile");
        for (sysctls, named) in [
            (r#"{"/etc/passwd":"0"}"#, "/etc/passwd"),
            (r#"{"net.ipv4.conf.eth1.arp_ignore":"1\nx"}"#, "arp_ignore"),
            (r#"{"net.ipv4.conf.all.rp_filter":"0"}"#, "all"),
            (
                r#"[{"ifindex":3,"mac":null,"ifname":"../../x","knob":"rp_filter","old":"0"}]"#,
                "../../x",
            ),
            (
                r#"[{"ifindex":3,"mac":null,"ifname":"eth1","knob":"forwarding","old":"0"}]"#,
                "forwarding",
            ),
        ] {
            write_raw(
                &paths,
                &format!(r#"{{"config":null,"managed":[],"sysctls":{sysctls}}}"#),
            );
            let err = format!("{:#}", load(&paths).unwrap_err());
            assert!(err.contains(named), "{sysctls}: {err}");
        }
        let mut bad = eni(3, "eth1");
        bad.name = "a/b".into();
        let managed = serde_json::to_string(&[bad]).unwrap();
        write_raw(
            &paths,
            &format!(r#"{{"config":null,"managed":{managed},"sysctls":[]}}"#),
        );
        assert!(format!("{:#}", load(&paths).unwrap_err()).contains("a/b"));

        write_raw(&paths, r#"{"config":null,"managed":[],"sysctls":[]}"#);
        assert!(load(&paths).unwrap().is_some());
        std::fs::set_permissions(file(&paths), std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(format!("{:#}", load(&paths).unwrap_err()).contains("writable"));
        std::fs::remove_dir_all(&paths.state_dir).unwrap();
    }

    /// Kept by ifindex and MAC: found again after a rename, not on another device that took the
    /// name, and recorded once however often attach runs.
    #[test]
    fn saved_values_follow_the_interface_not_its_name() {
        let eth1 = eni(3, "eth1");
        let mut st = State::default();
        st.remember(&eth1, Knob::ArpIgnore, "0");
        // A later attach after a rename sees enipin's own value: not the one to restore.
        st.remember(&eni(3, "ren1"), Knob::ArpIgnore, "1");
        assert_eq!(st.sysctls.len(), 1);
        let saved = &st.sysctls[0];
        let now = [iface(&eth1, "ren1"), iface(&eni(4, "eth1"), "eth1")];
        assert_eq!(saved.find(&now).map(|i| i.name.as_str()), Some("ren1"));
        assert_eq!(saved.find(&now[1..]), None);
        assert_eq!(
            st.sysctls_by_key(),
            [("net.ipv4.conf.eth1.arp_ignore".to_owned(), "0".to_owned())].into()
        );
    }

    /// Where the kernel keeps no address protocol, the state file says which addresses are
    /// enipin's: recorded on add, forgotten on delete, marked only on the same interface.
    #[test]
    fn added_addresses_are_recorded_and_marked_on_their_interface_only() {
        use crate::model::address::Address;
        let m = eni(3, "eth1");
        let a = Address {
            ifindex: 3,
            dev: "eth1".into(),
            cidr: "198.18.0.21/32".parse().unwrap(),
        };
        let mut st = State::default();
        st.record_addresses(&[Change::AddAddress(a.clone())], std::slice::from_ref(&m));
        st.record_addresses(&[Change::AddAddress(a.clone())], std::slice::from_ref(&m));
        assert_eq!(st.addresses.len(), 1);
        let mut with = iface(&m, "eth1");
        with.addrs.push(a.cidr);
        let mut other = iface(&eni(4, "eth2"), "eth2");
        other.addrs.push(a.cidr);
        let mut d = Discovery {
            interfaces: vec![with, other],
            ..Discovery::default()
        };
        st.mark_addresses(&mut d);
        assert_eq!(d.interfaces[0].ours, [a.cidr]);
        assert!(
            d.interfaces[1].ours.is_empty(),
            "another interface's address"
        );
        st.mark_addresses(&mut d);
        assert_eq!(d.interfaces[0].ours.len(), 1, "marked once");
        st.record_addresses(&[Change::DelAddress(a)], &[m]);
        assert!(st.addresses.is_empty());
        // Earlier state files have no `addresses`, and an empty list is not written.
        let json = serde_json::to_value(&st).unwrap();
        assert!(json.get("addresses").is_none(), "{json}");
    }
}
