//! apt-get and apt-cache on a sources list, index and cache of their own under `.tools/`: the
//! machine's own sources, package state and dpkg architectures are never read nor changed. One
//! configuration per use: the kernel matrix's (`.tools/apt/`, `.tools/apt-arm64/`), the arm64
//! guest's userland (sharing the latter), the deploy recipes' checkers (`.tools/apt-tools/`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The archive of each suite: the security suites have their own host.
fn archive(suite: &str) -> &'static str {
    if suite.ends_with("-security") {
        "http://security.debian.org/debian-security"
    } else {
        "http://deb.debian.org/debian"
    }
}

/// apt-get and apt-cache on a sources list, index and cache of their own in a directory, whose
/// apt takes `arch` for its native architecture.
pub(crate) struct PrivateApt {
    dir: PathBuf,
    arch: String,
}

impl PrivateApt {
    /// A configuration in `dir` reading `main` of `suites` for `arch`.
    pub(crate) fn new(dir: PathBuf, arch: &str, suites: &[&str]) -> Result<Self> {
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        // Packages indexes only: the machine's apt.conf.d may add DEP-11 and Contents targets,
        // which would triple the download (60 MB instead of 20 for all suites, measured).
        let list: String = suites
            .iter()
            .map(|s| {
                format!(
                    "deb [arch={arch} target=Packages] {} {s} main\n",
                    archive(s)
                )
            })
            .collect();
        fs::write(dir.join("sources.list"), list)?;
        Ok(Self {
            dir,
            arch: arch.to_string(),
        })
    }

    /// The options that make apt use nothing of the machine's package state.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        for (key, value) in [
            ("Dir::Etc::SourceList", d("sources.list")),
            ("Dir::Etc::SourceParts", "/dev/null".into()),
            ("Dir::Etc::Preferences", "/dev/null".into()),
            ("Dir::Etc::PreferencesParts", "/dev/null".into()),
            ("Dir::State::Lists", d("lists")),
            ("Dir::State::status", "/dev/null".into()),
            ("Dir::Cache", d("cache")),
            // Root downloads into a directory _apt cannot write: say so once, not per file.
            ("APT::Sandbox::User", "root".into()),
            // Plain names mean this architecture's packages, Depends resolve within it.
            ("APT::Architecture", self.arch.clone()),
            ("APT::Architectures", self.arch.clone()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    }

    pub(crate) fn update(&self, what: &str) -> Result<()> {
        eprintln!(
            "setup: reading Debian's {} indexes for {what} (private apt configuration)",
            self.arch
        );
        crate::run(self.command("apt-get").args(["-qq", "update"]))
    }

    /// `apt-cache show` of one version; None if apt knows no such package.
    pub(crate) fn show(&self, what: &str) -> Result<Option<String>> {
        let out = self
            .command("apt-cache")
            .args(["show", "--no-all-versions", what])
            .output()
            .context("running apt-cache")?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// Downloads each package (`name` or `name=version`) into `dir`, which holds no other .deb;
    /// returns the .debs' paths.
    pub(crate) fn download(&self, packages: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
        let mut cmd = self.command("apt-get");
        cmd.current_dir(dir)
            .args(["-qq", "download"])
            .args(packages);
        crate::run(&mut cmd)?;
        let debs: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        if debs.len() != packages.len() {
            bail!(
                "apt-get download left {} .debs for {packages:?}",
                debs.len()
            );
        }
        Ok(debs)
    }
}

/// A field of one `apt-cache show` record.
pub(crate) fn field(record: &str, name: &str) -> Option<String> {
    record.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// The package names of Depends, alternatives included ("a (= 1), b | c" gives a, b, c).
pub(crate) fn depends(record: &str) -> Vec<String> {
    field(record, "Depends")
        .unwrap_or_default()
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
