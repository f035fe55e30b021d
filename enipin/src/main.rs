//! The `enipin` command line: parses the arguments into a [`Config`] and runs one command.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{CommandFactory as _, Parser, Subcommand};
use enipin::config::{self, Config, DelegatedPrefix, MetadataSource, Mode, Paths};

/// Pins every reply to the network interface (ENI) that owns its source address.
#[derive(Parser, Debug)]
#[command(name = "enipin", version, about, long_about = None)]
struct Cli {
    /// Run inside the named network namespace (/run/netns/NAME) instead of the current one.
    #[arg(long, global = true, env = "ENIPIN_NETNS")]
    netns: Option<String>,
    /// bpffs directory for enipin's pinned links, program and maps.
    #[arg(long, global = true, env = "ENIPIN_PIN_DIR", default_value = config::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Directory of enipin's state file.
    #[arg(long, global = true, env = "ENIPIN_STATE_DIR", default_value = config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct Selection {
    /// Interfaces to manage, by name or MAC (comma-separated). Default: every Ethernet interface
    /// that is up and shares a subnet with another one.
    #[arg(long, value_delimiter = ',')]
    interfaces: Vec<String>,
    /// Gateway for every managed interface (default: the main table's default route through the
    /// interface, else the subnet's first host).
    #[arg(long)]
    gateway: Option<IpAddr>,
    /// First policy routing table number.
    #[arg(long, default_value_t = config::DEFAULT_TABLE_BASE)]
    table_base: u32,
    /// First rule priority.
    #[arg(long, default_value_t = config::DEFAULT_PRIORITY)]
    priority: u32,
    /// A prefix delegated to an interface, IFACE=CIDR (repeatable).
    #[arg(long = "prefix", value_name = "IFACE=CIDR")]
    prefixes: Vec<DelegatedPrefix>,
}

/// Which layers `attach` and `watch` install, and how the datapath behaves.
#[derive(clap::Args, Debug, Clone)]
struct Layers {
    /// Leave policy rules, routes and sysctls alone (eBPF only).
    #[arg(long)]
    no_rules: bool,
    /// Leave the datapath alone (rules only).
    #[arg(long)]
    no_ebpf: bool,
    /// enforce: redirect misrouted packets; monitor: only count them.
    #[arg(long, value_enum, default_value_t = Mode::Enforce)]
    mode: Mode,
    /// Log rare datapath events (redirect failures, MTU) through aya-log; `watch` prints them on
    /// stderr.
    #[arg(long)]
    debug: bool,
}

/// Addresses and prefixes from the cloud's metadata (`attach` and `watch`).
#[derive(clap::Args, Debug, Clone)]
struct Metadata {
    /// Also manage the secondary addresses and delegated prefixes the cloud's metadata assigns
    /// each ENI (aws: IMDSv2). Off by default: netlink alone.
    #[arg(long, value_enum, default_value_t = MetadataSource::None)]
    metadata: MetadataSource,
    /// The metadata service's base URL (default: aws's http://169.254.169.254, then
    /// http://[fd00:ec2::254]).
    #[arg(long, value_name = "URL")]
    metadata_endpoint: Option<String>,
    /// Add the addresses metadata assigns that an interface lacks (marked as enipin's), and
    /// remove them when metadata stops listing them and on detach. Needs --metadata.
    #[arg(long, requires = "metadata")]
    configure_addresses: bool,
}

impl Metadata {
    fn apply(self, cfg: Config) -> Config {
        Config {
            metadata: self.metadata,
            metadata_endpoint: self.metadata_endpoint,
            configure_addresses: self.configure_addresses,
            ..cfg
        }
    }
}

impl Layers {
    fn apply(self, cfg: Config) -> Config {
        Config {
            rules: !self.no_rules,
            sysctls: !self.no_rules,
            ebpf: !self.no_ebpf,
            mode: self.mode,
            debug: self.debug,
            ..cfg
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install source policy routing and the TC egress enforcer on the managed interfaces.
    Attach {
        #[command(flatten)]
        sel: Selection,
        #[command(flatten)]
        layers: Layers,
        #[command(flatten)]
        metadata: Metadata,
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output of --dry-run: enipin's diff, or the equivalent iproute2 commands.
        #[arg(long, value_enum, default_value_t = enipin::plan::DiffFormat::Text)]
        format: enipin::plan::DiffFormat,
    },
    /// Attach, then keep the desired state installed: re-apply it whenever links, addresses,
    /// rules or routes change (rules removed by another tool, a new ENI or secondary address, a
    /// detached ENI), and every --interval. One log line per reconcile that changed something.
    ///
    /// A failed reconcile changes nothing and is retried with backoff: an error is never taken
    /// for "nothing to manage". When discovery succeeds and no interface needs pinning any more
    /// (the last ENI sharing the subnet is gone), enipin's rules, routes and datapath are removed.
    /// SIGTERM/SIGINT stop watching and exit 0 LEAVING the state installed, like attach, so a
    /// restart of the service causes no gap; `enipin detach` removes it. Holds the state
    /// directory's lock while it runs: attach and detach refuse to run beside it.
    Watch {
        #[command(flatten)]
        sel: Selection,
        #[command(flatten)]
        layers: Layers,
        #[command(flatten)]
        metadata: Metadata,
        /// Seconds between reconciles when no event arrives (a safety net for missed events).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// With --metadata: seconds between metadata lookups (the service sends no event).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        metadata_interval: u64,
        /// Serve GET /metrics (datapath and control plane) and GET /healthz on this address;
        /// `none` serves nothing. A non-loopback address is allowed, with a warning.
        #[arg(long, default_value = "127.0.0.1:9717", value_parser = parse_listen)]
        metrics_listen: Listen,
    },
    /// Remove exactly what enipin added and restore the sysctls it changed.
    Detach,
    /// Managed interfaces, addresses, tables, rules, attachment, and drift from the desired state.
    ///
    /// Drift is anything `enipin attach` would change: a missing rule, route or sysctl, and a
    /// missing datapath link, program, map or owner entry. Exit status: 0 when attached without
    /// drift (or not attached at all: no state file, nothing desired), 1 when attached with drift
    /// or when the state could not be read, so a health check can run it.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Datapath counters per interface, summed over CPUs.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Counters in Prometheus text format: once to stdout, or served over HTTP with --listen.
    Metrics {
        /// Serve GET /metrics on this address (e.g. 127.0.0.1:9717).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Print the desired state as persistent distro network configuration.
    Render {
        #[command(flatten)]
        sel: Selection,
        #[arg(long, value_enum)]
        format: enipin::render::Format,
    },
    /// Run the seed scenario in throwaway namespaces: two ENIs in one subnet behind a "VPC" that
    /// drops packets whose source IP or MAC is not the ENI's, before and after enipin.
    Lab {
        /// Leave the namespaces in place and print how to enter them.
        #[arg(long)]
        keep: bool,
        /// The metadata scenario: the secondary ENI's second address exists only in a metadata
        /// server (IMDSv2, in the lab); `attach --metadata aws --configure-addresses` adds it.
        #[arg(long)]
        metadata: bool,
    },
    /// Shell completions on stdout (the packages install them).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Man pages, section 8 (enipin is in sbin): enipin.8 and one per command, written into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

/// `--metrics-listen`: an address, or `none`.
#[derive(Clone, Debug)]
struct Listen(Option<std::net::SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "none" {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("{e}: an address and port such as 127.0.0.1:9717, or `none`"))
}

impl Selection {
    fn into_config(self) -> Config {
        Config {
            interfaces: self.interfaces,
            gateway: self.gateway,
            table_base: self.table_base,
            priority: self.priority,
            prefixes: self.prefixes.into_iter().map(Into::into).collect(),
            ..Config::default()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `enipin status | head` should end quietly, as other Unix tools do, not panic on EPIPE. Not
    // the lab: killed by SIGPIPE it could not remove its namespaces; a failed print unwinds
    // through their guards instead.
    if !matches!(cli.command, Command::Lab { .. }) {
        // SAFETY: resetting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // Enter the namespace before the runtime starts its threads: they inherit it.
    if let Some(ns) = &cli.netns
        && let Err(e) = enipin::netns::enter(ns)
    {
        eprintln!("enipin: {e:#}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("enipin: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("enipin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let paths = Paths {
        pin_dir: cli.pin_dir,
        state_dir: cli.state_dir,
    };
    match cli.command {
        Command::Attach {
            sel,
            layers,
            metadata,
            dry_run,
            format,
        } => {
            let cfg = metadata.apply(layers.apply(sel.into_config()));
            enipin::commands::attach(&cfg, &paths, dry_run, format).await?;
        }
        Command::Watch {
            sel,
            layers,
            metadata,
            interval,
            metadata_interval,
            metrics_listen,
        } => {
            let cfg = metadata.apply(layers.apply(sel.into_config()));
            let mut pacing = enipin::watch::Pacing::new(std::time::Duration::from_secs(interval));
            pacing.metadata = std::time::Duration::from_secs(metadata_interval);
            enipin::watch::watch(&cfg, &paths, pacing, metrics_listen.0).await?;
        }
        Command::Detach => enipin::commands::detach(&paths).await?,
        Command::Status { json } => {
            if !enipin::commands::status(&paths, json).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Stats { json } => enipin::metrics::stats(&paths, json).await?,
        Command::Metrics { listen } => enipin::metrics::metrics(&paths, listen).await?,
        Command::Render { sel, format } => {
            let cfg = sel.into_config();
            enipin::render::render(&cfg, format).await?;
        }
        Command::Lab { keep, metadata } => return enipin::lab::run(keep, metadata).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "enipin", &mut std::io::stdout());
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)?;
            let mut cmd = Cli::command();
            // Propagates the global flags into every command's page.
            cmd.build();
            man_pages(&cmd, &dir)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One page per command; after `build()` each command's display name is `enipin-<command>`.
fn man_pages(cmd: &clap::Command, dir: &std::path::Path) -> Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.8")), page)?;
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            man_pages(sub, dir)?;
        }
    }
    Ok(())
}
